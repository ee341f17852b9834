"""A SIGTERM that lands while ``serve`` is still starting stops it gracefully (exit 0).

The server listens before the graceful handlers of ``serve_until_signal`` are
installed; an orchestrator may stop a pod in that moment. The subprocess below
sends itself SIGTERM right after the server has started: without the CLI's
early handlers the default action kills it (exit -15).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import dataclasses, os, signal, sys
from marketplace_{service} import cli
from marketplace_{service}.server import create_server

async def started_then_terminated(settings):
    server, port = await create_server(settings)
    os.kill(os.getpid(), signal.SIGTERM)
    return server, port

cli_ = dataclasses.replace(cli.CLI, create_server=started_then_terminated)
sys.exit(cli_.main(["serve", "--migrate"]))
"""


@pytest.mark.parametrize("service", ["bids", "execution"])
def test_sigterm_while_starting_is_a_graceful_stop(service: str, tmp_path: Path) -> None:
    prefix = service.upper()
    env = {
        f"{prefix}_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        f"{prefix}_GRPC_PORT": "0",
        f"{prefix}_METRICS_PORT": "0",
        f"{prefix}_SHUTDOWN_GRACE_SECONDS": "1",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(service=service)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SIGTERM" in result.stdout + result.stderr  # the graceful path logged the signal
