"""A TLS file that is missing or not PEM: the service refuses to start in one line
naming the variable (exit 2), for the server side and for execution's link to bids."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def serve(prog: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BIDS_", "EXECUTION_"))}
    return subprocess.run(
        [str(BIN / prog), "serve", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def refusal(result: subprocess.CompletedProcess[str], prog: str) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{prog}:")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def test_bids_with_a_certificate_file_that_is_not_pem_refuses(
    sqlite_url: str, tmp_path: Path
) -> None:
    junk = tmp_path / "cert.pem"
    junk.write_text("not a certificate")
    result = serve(
        "bids-service",
        "--migrate",
        BIDS_DATABASE_URL=sqlite_url,
        BIDS_GRPC_PORT="0",
        BIDS_METRICS_PORT="0",
        BIDS_TLS_CERT_FILE=str(junk),
        BIDS_TLS_KEY_FILE=str(junk),
    )
    line = refusal(result, "bids-service")
    assert "BIDS_TLS_" in line
    assert "not a PEM file" in line


def test_execution_with_a_missing_bids_ca_file_refuses(sqlite_url: str, tmp_path: Path) -> None:
    # Checked before the database is even looked at (no migration needed).
    result = serve(
        "execution-service",
        EXECUTION_DATABASE_URL=sqlite_url,
        EXECUTION_GRPC_PORT="0",
        EXECUTION_METRICS_PORT="0",
        EXECUTION_BIDS_TLS_CA_FILE=str(tmp_path / "missing-ca.pem"),
    )
    line = refusal(result, "execution-service")
    assert "EXECUTION_BIDS_TLS_CA_FILE: cannot read" in line
