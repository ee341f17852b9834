"""Run both services in the foreground on the embedded default (what `make run` does).

Checks first that the four ports are free (a busy one is reported in one line:
which port, and which variable moves it). Starts `bids-service serve --migrate`,
waits until its grpc.health.v1 answers SERVING for the BidService (not merely a
TCP connect), then starts `execution-service serve --migrate` pointed at it and
waits for it the same way.

Ctrl-C (SIGINT) or SIGTERM stops the execution service first and waits for it
(its running executions still report to bids), then stops bids. If either
exits on its own, the other is stopped too and the exit code says which failed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from marketplace_common.health_probe import ProbeExit, local_target, probe
from marketplace_common.ports import PortInUseError, check_port_free

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STOP_TIMEOUT_S = 30.0
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Service:
    """One service as the runner starts it: its script, health name and ports."""

    prog: str
    prefix: str
    health_service: str
    grpc_port: int
    metrics_port: int

    @property
    def host(self) -> str:
        return os.environ.get(f"{self.prefix}_GRPC_HOST", "127.0.0.1")

    def port(self, kind: str) -> int:
        """The port of ``kind`` (GRPC or METRICS), from the environment or the default."""
        default = self.grpc_port if kind == "GRPC" else self.metrics_port
        return int(os.environ.get(f"{self.prefix}_{kind}_PORT", str(default)))


BIDS = Service("bids-service", "BIDS", "marketplace.bids.v1.BidService", 50051, 9101)
EXECUTION = Service(
    "execution-service", "EXECUTION", "marketplace.execution.v1.ExecutionService", 50052, 9102
)


def say(message: str) -> None:
    print(f"make run: {message}", file=sys.stderr, flush=True)


def busy_port(service: Service) -> str | None:
    """One line naming a port of ``service`` that is taken, or None when all are free."""
    metrics_host = os.environ.get(f"{service.prefix}_METRICS_HOST", service.host)
    try:
        check_port_free(
            service.host,
            service.port("GRPC"),
            what=f"{service.prog} gRPC",
            setting=f"{service.prefix}_GRPC_PORT",
        )
        check_port_free(
            metrics_host,
            service.port("METRICS"),
            what=f"{service.prog} metrics",
            setting=f"{service.prefix}_METRICS_PORT",
        )
    except PortInUseError as exc:
        return str(exc)
    return None


def wait_serving(service: Service, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """True once the service's health answers SERVING; False if it exits or times out."""
    target = local_target(service.host, service.port("GRPC"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if probe(target, service.health_service, timeout=1.0).code == ProbeExit.SERVING:
            return True
        time.sleep(0.2)
    return False


def start(service: Service, env: dict[str, str]) -> subprocess.Popen[bytes]:
    # A new process group so a Ctrl-C reaches the children only through us,
    # and they stop in order.
    return subprocess.Popen(  # noqa: S603 (our own console script, fixed arguments)
        [str(BIN / service.prog), "serve", "--migrate"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )


def stop_in_order(procs: list[tuple[Service, subprocess.Popen[bytes]]]) -> None:
    """SIGTERM the last started first and wait for it before stopping the next."""
    for service, proc in reversed(procs):
        if proc.poll() is None:
            say(f"stopping {service.prog}")
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            say(f"{service.prog} did not stop within {STOP_TIMEOUT_S:.0f} s; killing it")
            proc.kill()
            proc.wait()


def main() -> int:
    stopping = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    for service in (BIDS, EXECUTION):
        problem = busy_port(service)
        if problem:
            say(problem)
            return 1
    (ROOT / "var").mkdir(exist_ok=True)
    env = dict(os.environ)
    env.setdefault("EXECUTION_BIDS_TARGET", local_target(BIDS.host, BIDS.port("GRPC")))

    procs: list[tuple[Service, subprocess.Popen[bytes]]] = []
    for service in (BIDS, EXECUTION):
        proc = start(service, env)
        procs.append((service, proc))
        if not wait_serving(service, proc, START_TIMEOUT_S):
            stop_in_order(procs)
            say(f"{service.prog} did not start; see its log above")
            return 1
        say(f"{service.prog} SERVING on {local_target(service.host, service.port('GRPC'))}")

    while not stopping and all(p.poll() is None for _, p in procs):
        time.sleep(0.2)
    stop_in_order(procs)
    codes = [p.returncode for _, p in procs]
    return 0 if stopping and all(c == 0 for c in codes) else max(1, *codes)


if __name__ == "__main__":
    sys.exit(main())
