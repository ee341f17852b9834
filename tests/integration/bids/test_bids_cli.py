"""The console script: serve refuses an unmigrated database; migrate and serve --migrate work."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "bids-service"


def _env(url: str, port: int = 0) -> dict[str, str]:
    return {
        **os.environ,
        "BIDS_DATABASE_URL": url,
        "BIDS_GRPC_PORT": str(port),
        "BIDS_METRICS_PORT": "0",
        "BIDS_LOG_JSON": "true",
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_on_unmigrated_database_says_so_and_exits_non_zero(sqlite_url: str) -> None:
    result = subprocess.run(
        [BIN, "serve"], env=_env(sqlite_url), capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "not migrated" in result.stderr


def test_migrate_then_serve_starts_and_stops_on_sigterm(sqlite_url: str) -> None:
    migrated = subprocess.run([BIN, "migrate"], env=_env(sqlite_url), timeout=60)
    assert migrated.returncode == 0
    port = _free_port()
    proc = subprocess.Popen([BIN, "serve"], env=_env(sqlite_url, port))
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the server exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("the server never listened")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
