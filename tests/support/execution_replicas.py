"""Execution service replicas as real processes (``execution-service serve``).

Replicas of one service share nothing but their database and the provider,
so the tests that measure how they share a provider key run each replica in
its own process, with its own event loop and interpreter lock, as deployed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import grpc.aio
from marketplace.execution.v1 import execution_pb2 as pb
from marketplace.execution.v1 import execution_pb2_grpc

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ReplicaProcess:
    """One ``execution-service serve`` process with EXECUTION_* settings; its log in
    ``log_path``. Use ``async with``: started and ready on entry, stopped on exit."""

    def __init__(self, settings: dict[str, Any], log_path: Path) -> None:
        self.port = _free_port()
        self.env = {f"EXECUTION_{k.upper()}": str(v) for k, v in settings.items()}
        self.env["EXECUTION_GRPC_PORT"] = str(self.port)
        self.env.setdefault("EXECUTION_METRICS_PORT", "0")
        self.env.setdefault("EXECUTION_LOG_LEVEL", "INFO")
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.aio.Channel | None = None

    @property
    def stub(self) -> execution_pb2_grpc.ExecutionServiceStub:
        assert self.channel is not None
        return execution_pb2_grpc.ExecutionServiceStub(self.channel)

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [str(BIN / "execution-service"), "serve"],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def __aenter__(self) -> ReplicaProcess:
        self.proc = self._spawn()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        async with asyncio.timeout(30):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"replica exited: {self.log_path.read_text()[-2000:]}")
                try:
                    request = pb.ListExecutionsRequest()
                    await self.stub.ListExecutions(request, timeout=1)  # type: ignore[misc]
                    return self
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.channel is not None:
            await self.channel.close(None)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 10)
