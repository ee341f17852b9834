"""The services as processes: the bids service and execution replicas, each its own
interpreter started through ``e2ebench.serve`` (the console script's main plus a lag
probe), its output in a log file; CPU time read from ``/proc``."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

BENCH_DIR = Path(__file__).resolve().parents[1]
OWN_PREFIXES = ("BIDS_", "EXECUTION_")
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Lag:
    p99_ms: float
    max_ms: float


class ServiceProcess:
    """One ``<service> serve`` process; ``name`` is ``bids`` or ``execution``."""

    def __init__(
        self,
        name: str,
        label: str,
        settings: Mapping[str, str],
        workdir: Path,
        *,
        migrate: bool = False,
    ) -> None:
        self.name = name
        self.migrate = migrate
        self.label = label
        self.port = free_port()
        prefix = "BIDS_" if name == "bids" else "EXECUTION_"
        self.log_path = workdir / f"{label}.log"
        self.lag_path = workdir / f"{label}.lag"
        env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_PREFIXES)}
        env.update({f"{prefix}GRPC_PORT": str(self.port), f"{prefix}METRICS_PORT": "0"})
        env.update(settings)
        env["MARKETPLACE_BENCH_LAG_FILE"] = str(self.lag_path)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR), env.get("PYTHONPATH")]))
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        command = [sys.executable, "-m", "e2ebench.serve", self.name, "serve"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command + (["--migrate"] if self.migrate else []),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    async def wait_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        async with grpc.aio.insecure_channel(self.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.label} exited:\n{self.log_tail()}")
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(
            f"{self.label} not serving after {START_TIMEOUT_S} s:\n{self.log_tail()}"
        )

    async def lag(self) -> Lag:
        """The lag since the previous call (the first call only starts the window)."""
        before = self.lag_path.stat().st_mtime_ns if self.lag_path.exists() else 0
        os.kill(self.pid, signal.SIGUSR1)
        for _ in range(500):
            if self.lag_path.exists() and self.lag_path.stat().st_mtime_ns != before:
                p99, worst = self.lag_path.read_text().split()
                return Lag(float(p99), float(worst))
            await asyncio.sleep(0.01)
        raise RuntimeError(f"{self.label} did not answer the lag probe")

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    async def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 10)
