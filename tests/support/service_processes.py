"""Both services as real processes (``<name> serve --migrate``) for end-to-end tests.

Each runs from its console script on a free loopback port, with its own SQLite
file and the offline LLM provider, its output in a log file of the test's
directory; the environment is cleaned of any BIDS_*/EXECUTION_* setting of the
machine first.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 20.0
OWN_PREFIXES = ("BIDS_", "EXECUTION_")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_environment(drop: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment without service settings (nor the names in ``drop``)."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(OWN_PREFIXES) and key not in drop
    }


@dataclass
class ServiceProcess:
    """One ``<name> serve --migrate`` subprocess and its log file."""

    name: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes]
    root_certificates: bytes | None = None
    """The CA to trust when the service serves TLS (None: plaintext)."""

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_serving(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        if self.root_certificates is None:
            channel = grpc.insecure_channel(self.target)
        else:
            tls = grpc.ssl_channel_credentials(root_certificates=self.root_certificates)
            channel = grpc.secure_channel(self.target, tls)
        with channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                except grpc.RpcError:
                    time.sleep(0.1)
                    continue
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                time.sleep(0.1)
        pytest.fail(f"{self.name} not serving after {timeout} s:\n{self.log()}")

    def terminate(self, wait: float) -> tuple[int | None, float]:
        """SIGTERM; the exit code (None: still running after ``wait`` s, then killed)
        and the seconds it took to exit."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            self.kill()
            code = None
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_service(
    name: str,
    settings: Mapping[str, str],
    workdir: Path,
    root_certificates: bytes | None = None,
) -> ServiceProcess:
    """Starts ``name`` (bids-service or execution-service); ``settings`` must hold its port;
    ``root_certificates`` is the CA to trust when the settings turn TLS on."""
    port_key = "BIDS_GRPC_PORT" if name == "bids-service" else "EXECUTION_GRPC_PORT"
    log_path = workdir / f"{name}-{settings[port_key]}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [str(BIN / name), "serve", "--migrate"],
            cwd=workdir,
            env={**clean_environment(), **settings},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return ServiceProcess(name, int(settings[port_key]), log_path, proc, root_certificates)


@dataclass
class Stack:
    bids: ServiceProcess
    execution: ServiceProcess
    execution_settings: dict[str, str]
    workdir: Path

    def logs(self) -> str:
        return f"--- bids\n{self.bids.log()}\n--- execution\n{self.execution.log()}"

    def restart_execution(self, wait: float) -> None:
        """SIGTERM the execution service, then start it again on the same port and database."""
        code, _ = self.execution.terminate(wait)
        assert code == 0, self.logs()
        self.execution = start_service(
            "execution-service",
            self.execution_settings,
            self.workdir,
            self.execution.root_certificates,
        )
        self.execution.wait_until_serving()


@contextmanager
def running_stack(
    workdir: Path,
    *,
    grace_s: float,
    bids_settings: Mapping[str, str] | None = None,
    execution_settings: Mapping[str, str] | None = None,
    root_certificates: bytes | None = None,
) -> Iterator[Stack]:
    """Both services serving on free ports, each with its own SQLite file in ``workdir``;
    killed on exit if still running. Extra settings are added to (or replace) the defaults;
    ``root_certificates``: the CA to trust when they turn TLS on."""
    grace = str(grace_s)
    bids = start_service(
        "bids-service",
        {
            "BIDS_GRPC_PORT": str(free_port()),
            "BIDS_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'bids.db'}",
            "BIDS_METRICS_PORT": "0",
            "BIDS_SHUTDOWN_GRACE_SECONDS": grace,
            **(bids_settings or {}),
        },
        workdir,
        root_certificates,
    )
    stack: Stack | None = None
    try:
        bids.wait_until_serving()
        settings = {
            "EXECUTION_GRPC_PORT": str(free_port()),
            "EXECUTION_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'execution.db'}",
            "EXECUTION_BIDS_TARGET": bids.target,
            "EXECUTION_METRICS_PORT": "0",
            "EXECUTION_SHUTDOWN_GRACE_SECONDS": grace,
            "EXECUTION_LLM_PROVIDER": "offline",
            **(execution_settings or {}),
        }
        execution = start_service("execution-service", settings, workdir, root_certificates)
        stack = Stack(bids, execution, settings, workdir)
        stack.execution.wait_until_serving()
        yield stack
    finally:
        if stack is not None:
            stack.execution.kill()
        bids.kill()
