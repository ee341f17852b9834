"""docs/walkthrough.md (scripts/walkthrough.sh) against both services as real processes.

Both services run from their console scripts (``serve --migrate``) on free
loopback ports with SQLite files in ``tmp_path``; the script drives them with
grpcurl from a bid to a delivery; then SIGTERM stops both cleanly.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SCRIPT = ROOT / "scripts" / "walkthrough.sh"
GRACE_S = 5.0
START_TIMEOUT_S = 20.0
SCRIPT_TIMEOUT_S = 30.0
OWN_PREFIXES = ("BIDS_", "EXECUTION_")
SCRIPT_VARIABLES = ("GRPCURL", "PYTHON", "BIDS", "EXECUTION", "JSON_TOOL")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_environment() -> dict[str, str]:
    """The environment without settings or script variables that would change the run."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(OWN_PREFIXES) and key not in SCRIPT_VARIABLES
    }


@dataclass
class ServiceProcess:
    """One ``<name> serve --migrate`` subprocess and its log file."""

    name: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as channel:
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

    def terminate(self) -> tuple[int | None, float]:
        """SIGTERM; the exit code (None: still running well after the grace period, then
        killed) and the seconds it took to exit."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(GRACE_S + 5.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        return code, time.monotonic() - started


def _start(name: str, settings: dict[str, str], workdir: Path) -> ServiceProcess:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(BIN / name), "serve", "--migrate"],
            cwd=workdir,
            env={**_clean_environment(), **settings},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    port_key = "BIDS_GRPC_PORT" if name == "bids-service" else "EXECUTION_GRPC_PORT"
    return ServiceProcess(name, int(settings[port_key]), log_path, proc)


@dataclass
class Stack:
    bids: ServiceProcess
    execution: ServiceProcess

    def logs(self) -> str:
        return f"--- bids\n{self.bids.log()}\n--- execution\n{self.execution.log()}"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """Both services serving on free ports, each with its own SQLite file."""
    bids_port, execution_port = _free_port(), _free_port()
    grace = str(GRACE_S)
    bids = _start(
        "bids-service",
        {
            "BIDS_GRPC_PORT": str(bids_port),
            "BIDS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bids.db'}",
            "BIDS_METRICS_PORT": "0",
            "BIDS_SHUTDOWN_GRACE_SECONDS": grace,
        },
        tmp_path,
    )
    started = [bids]
    try:
        bids.wait_until_serving(START_TIMEOUT_S)
        execution = _start(
            "execution-service",
            {
                "EXECUTION_GRPC_PORT": str(execution_port),
                "EXECUTION_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'execution.db'}",
                "EXECUTION_BIDS_TARGET": bids.target,
                "EXECUTION_METRICS_PORT": "0",
                "EXECUTION_SHUTDOWN_GRACE_SECONDS": grace,
            },
            tmp_path,
        )
        started.append(execution)
        execution.wait_until_serving(START_TIMEOUT_S)
        yield Stack(bids, execution)
    finally:
        for service in reversed(started):
            if service.proc.poll() is None:
                service.proc.kill()
                service.proc.wait()


def _run_walkthrough(stack: Stack, json_tool: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={
            **_clean_environment(),
            "GRPCURL": str(BIN / "grpcurl"),
            "PYTHON": sys.executable,
            "BIDS": stack.bids.target,
            "EXECUTION": stack.execution.target,
            "JSON_TOOL": json_tool,
        },
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        check=False,
    )


def test_walkthrough_goes_from_bid_to_delivery_then_services_stop_on_sigterm(stack: Stack) -> None:
    run = _run_walkthrough(stack, "auto")

    report = f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}\n{stack.logs()}"
    assert run.returncode == 0, report
    assert "walkthrough: OK" in run.stdout, report
    # The expected errors, with details grpcurl decoded through reflection.
    assert '"@type":"type.googleapis.com/google.rpc.BadRequest"' in run.stdout
    assert '"reason":"BID_ALREADY_ACTIVE"' in run.stdout
    assert '"reason":"DELIVERY_NOT_FOUND"' in run.stdout
    # The delivery carries the result the execution produced for the accepted bid's task.
    assert "ok: task.status = TASK_STATUS_COMPLETED" in run.stdout
    assert "ok: delivery.result = Offline answer to: Write a haiku About gRPC" in run.stdout

    execution_code, execution_seconds = stack.execution.terminate()
    bids_code, bids_seconds = stack.bids.terminate()
    assert (execution_code, bids_code) == (0, 0), stack.logs()
    assert max(execution_seconds, bids_seconds) < GRACE_S, (execution_seconds, bids_seconds)


def test_walkthrough_parses_json_with_python_when_jq_is_not_used(stack: Stack) -> None:
    run = _run_walkthrough(stack, "python")

    report = f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}\n{stack.logs()}"
    assert run.returncode == 0, report
    assert "JSON parsed with python" in run.stdout
    assert "ok: delivery.result = Offline answer to: Write a haiku About gRPC" in run.stdout
