"""Both services for real: the bids service in process, the execution service in process
or as a subprocess (``.venv/bin/execution-service serve``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc.aio
import pytest
from marketplace.bids.v1 import bids_pb2_grpc
from marketplace.execution.v1 import execution_pb2_grpc
from marketplace_bids.migrations import SCRIPT_LOCATION as BIDS_MIGRATIONS
from marketplace_bids.server import create_server as create_bids_server
from marketplace_bids.settings import BidsSettings
from marketplace_common.auth import hash_token, new_token
from marketplace_common.migrations import upgrade_async

BIN = Path(sys.executable).parent
CLIENT_EMAIL = "alice@example.com"


@dataclass(frozen=True)
class BidsStack:
    """A running bids service and the tokens it accepts."""

    target: str
    database_url: str
    service_token: str
    client_token: str

    def client_stub(self, channel: grpc.aio.Channel) -> bids_pb2_grpc.BidServiceStub:
        return bids_pb2_grpc.BidServiceStub(channel)

    @property
    def client_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.client_token}"),)


@pytest.fixture
async def bids_stack(tmp_path: Path) -> AsyncIterator[BidsStack]:
    """The real bids service (SQLite, auth on: a service and a client token)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'bids.db'}"
    await upgrade_async(url, BIDS_MIGRATIONS)
    service_token, client_token = new_token(), new_token()
    settings = BidsSettings(
        grpc_port=0,
        metrics_port=0,
        database_url=url,
        auth_tokens=[
            f"{hash_token(service_token)}=service:execution",
            f"{hash_token(client_token)}=client:{CLIENT_EMAIL}",
        ],
    )
    server, port = await create_bids_server(settings)
    yield BidsStack(f"127.0.0.1:{port}", url, service_token, client_token)
    await server.stop(0.5)


@pytest.fixture
def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ExecutionProcess:
    """``execution-service serve`` in a subprocess, with EXECUTION_* settings."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.port = int(env["EXECUTION_GRPC_PORT"])
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "execution-service"), "serve"],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def stub(self, channel: grpc.aio.Channel) -> execution_pb2_grpc.ExecutionServiceStub:
        return execution_pb2_grpc.ExecutionServiceStub(channel)


@pytest.fixture
def execution_process(tmp_path: Path) -> Iterator[type[ExecutionProcess]]:
    """The class; every process started is terminated at the end."""
    started: list[ExecutionProcess] = []

    class Tracked(ExecutionProcess):
        def start(self) -> None:
            super().start()
            started.append(self)

    yield Tracked
    for process in started:
        process.terminate()
