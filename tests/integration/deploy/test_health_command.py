"""``bids-service health`` / ``execution-service health`` against real servers: exit 0 only on
SERVING, 1 on NOT_SERVING or an unknown service, 2 when nothing answers."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from marketplace_bids.migrations import SCRIPT_LOCATION as BIDS_MIGRATIONS
from marketplace_bids.server import BidsServer
from marketplace_bids.server import create_server as create_bids_server
from marketplace_bids.settings import BidsSettings
from marketplace_common.migrations import upgrade_async
from marketplace_execution.migrations import MIGRATIONS_DIR as EXECUTION_MIGRATIONS
from marketplace_execution.server import create_server as create_execution_server
from marketplace_execution.settings import ExecutionSettings
from tls_support import make_pki

BIN = Path(sys.executable).parent


async def health(prog: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the real console script; its exit code and everything it printed."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN / prog),
        "health",
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.fixture
async def bids(tmp_path: Path) -> AsyncIterator[tuple[BidsServer, int]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bids.db'}"
    await upgrade_async(url, BIDS_MIGRATIONS)
    server, port = await create_bids_server(
        BidsSettings(grpc_port=0, metrics_port=0, database_url=url)
    )
    yield server, port
    await server.stop(0.5)


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_serving_bids_exits_0_for_its_service_and_the_whole_server(
    bids: tuple[BidsServer, int],
) -> None:
    _, port = bids
    code, out = await health("bids-service", "--target", f"127.0.0.1:{port}")
    assert (code, "marketplace.bids.v1.BidService SERVING" in out) == (0, True), out
    code, out = await health("bids-service", "--target", f"127.0.0.1:{port}", "--service", "")
    assert code == 0, out


async def test_default_target_is_the_configured_port_even_on_a_wildcard_bind(
    bids: tuple[BidsServer, int],
) -> None:
    _, port = bids
    env = {"BIDS_GRPC_HOST": "0.0.0.0", "BIDS_GRPC_PORT": str(port)}
    code, out = await health("bids-service", env=env)
    assert code == 0, out
    assert f"127.0.0.1:{port}" in out


async def test_not_serving_while_stopping_exits_1(bids: tuple[BidsServer, int]) -> None:
    server, port = bids
    # What a stop does first: health turns NOT_SERVING while calls still drain.
    await server.grpc.health.enter_graceful_shutdown()
    code, out = await health("bids-service", "--target", f"127.0.0.1:{port}")
    assert code == 1, out
    assert "NOT_SERVING" in out


async def test_a_service_the_server_does_not_serve_exits_1(bids: tuple[BidsServer, int]) -> None:
    _, port = bids
    code, out = await health(
        "bids-service",
        "--target",
        f"127.0.0.1:{port}",
        "--service",
        "marketplace.execution.v1.ExecutionService",
    )
    assert code == 1, out


async def test_nothing_listening_exits_2() -> None:
    code, out = await health(
        "bids-service", "--target", f"127.0.0.1:{_unused_port()}", "--timeout", "1"
    )
    assert code == 2, out
    assert "UNAVAILABLE" in out or "DEADLINE_EXCEEDED" in out


async def test_execution_health_asks_for_the_execution_service(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'execution.db'}"
    await upgrade_async(url, EXECUTION_MIGRATIONS)
    settings = ExecutionSettings(grpc_port=0, metrics_port=0, database_url=url, workers=0)
    server, port = await create_execution_server(settings)
    try:
        code, out = await health("execution-service", env={"EXECUTION_GRPC_PORT": str(port)})
        assert code == 0, out
        assert "marketplace.execution.v1.ExecutionService SERVING" in out
        # The bids port answers health too, but not for the execution service.
        code, out = await health("bids-service", env={"BIDS_GRPC_PORT": str(port)})
        assert code == 1, out
    finally:
        await server.stop(0.5)


async def test_tls_and_mutual_tls_probe_with_the_operators_files(tmp_path: Path) -> None:
    # The certificate names the cluster DNS name only; the probe dials loopback.
    pki = make_pki(tmp_path, server_names=("bids.marketplace.svc",))
    url = f"sqlite+aiosqlite:///{tmp_path / 'bids.db'}"
    await upgrade_async(url, BIDS_MIGRATIONS)
    settings = BidsSettings(
        grpc_port=0,
        metrics_port=0,
        database_url=url,
        tls_cert_file=pki.server.cert,
        tls_key_file=pki.server.key,
        tls_client_ca_file=pki.ca,
    )
    server, port = await create_bids_server(settings)
    try:
        target = ("--target", f"127.0.0.1:{port}")
        tls = ("--ca-file", str(pki.ca), "--server-name", "bids.marketplace.svc")
        client = ("--cert-file", str(pki.client.cert), "--key-file", str(pki.client.key))
        code, out = await health("bids-service", *target, *tls, *client)
        assert code == 0, out
        # Without a client certificate the mTLS handshake fails: unreachable.
        code, out = await health("bids-service", *target, *tls, "--timeout", "2")
        assert code == 2, out
        # A CA file that is not there: one line, exit 2, no traceback.
        missing = ("--ca-file", str(tmp_path / "missing.pem"))
        code, out = await health("bids-service", *target, *missing)
        assert (code, "Traceback" in out, "missing.pem" in out) == (2, False, True), out
        # Plaintext to a TLS port: unreachable as well, never a false SERVING.
        code, out = await health("bids-service", *target, "--timeout", "2")
        assert code == 2, out
    finally:
        await server.stop(0.5)
