"""``execution-service``: serve refuses an unmigrated database (migrate fixes that) and an
unknown trace exporter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent / "execution-service"


def run(args: list[str], url: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "EXECUTION_DATABASE_URL": url,
        "EXECUTION_GRPC_PORT": "0",
        "EXECUTION_METRICS_PORT": "0",
        **extra,
    }
    return subprocess.run(
        [str(BIN), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_serve_on_an_unmigrated_database_says_so_and_exits_non_zero(sqlite_url: str) -> None:
    result = run(["serve"], sqlite_url)
    assert result.returncode != 0
    assert "not migrated" in result.stderr


def test_migrate_brings_the_database_up_to_date(sqlite_url: str) -> None:
    assert run(["migrate"], sqlite_url).returncode == 0
    assert run(["migrate"], sqlite_url).returncode == 0  # idempotent


def test_serve_refuses_an_unknown_trace_exporter(sqlite_url: str) -> None:
    assert run(["migrate"], sqlite_url).returncode == 0
    result = run(["serve"], sqlite_url, OTEL_TRACES_EXPORTER="zipkin")
    assert result.returncode == 2
    assert "OTEL_TRACES_EXPORTER: unknown exporter 'zipkin'" in result.stderr
