"""Several server processes on one port: ``<service> serve --workers N``.

One CPython process runs Python on one core at a time, however many calls it
serves. ``serve --workers N`` (or ``*_PROCESSES=N``) runs N whole server
processes that share the gRPC port through SO_REUSEPORT (the kernel spreads
new connections over them), under one supervising process, the way grpc's
multiprocessing example does:

* The supervisor checks the ports (a busy one is the usual one-line refusal,
  exit 2), does what must happen once (migrations; ``service_cli``), then holds
  the port with a bound, non-listening SO_REUSEPORT socket until it exits, so
  no other program can take it meanwhile (port 0 picks one), and forks the N
  processes before any gRPC object exists in it (gRPC's core does not survive
  a fork; the parent only ever imports grpc).
* Each process is a whole server: health and reflection, its own database
  pool and, in the execution service, its own worker pool. Its log lines carry
  ``worker`` (0..N-1) and ``pid``.
* Metrics: the processes write prometheus_client's multiprocess files
  (``PROMETHEUS_MULTIPROC_DIR``, a fresh temporary directory unless set) and
  the supervisor serves the one ``/metrics`` on ``*_METRICS_PORT``: counters
  and histograms summed over the processes (a stopped process's counts stay),
  gauges as the most recent value of a live process. The ``process_*``,
  ``python_*`` series are absent (they would describe one process only).
* SIGTERM or SIGINT to the supervisor: it sends SIGTERM to every process, each
  stops gracefully within ``*_SHUTDOWN_GRACE_SECONDS`` (health NOT_SERVING,
  its calls drain), and it exits 0 once all have exited 0. A second signal, or
  a process still running 5 s after the grace, is killed (SIGKILL); exit 1.
* A process that exits on its own (a crash, a refusal to start such as a
  missing TLS file) makes the supervisor stop the others and exit non-zero:
  the process's own code when positive, else 1. It never restarts a process
  itself: the orchestrator restarts the container and sees the crash loop.
* The supervisor killed outright (SIGKILL) takes its processes down with it
  (Linux ``PR_SET_PDEATHSIG``: they get SIGTERM and stop gracefully).

Signals stay blocked in a new process until its server's own handlers are in
place (``service_cli``), so a stop that lands while it starts is graceful too.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from prometheus_client import CollectorRegistry, multiprocess, values
from structlog.typing import FilteringBoundLogger

from marketplace_common.metrics import MetricsHttpServer, start_metrics_server

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
EXIT_MARGIN_SECONDS = 5.0
"""How long after the grace a process may take to exit (shutdown hooks, the exit
itself) before it is killed; the same spare the manifests give the kubelet."""
_PR_SET_PDEATHSIG = 1

WorkerMain = Callable[[int, int], int]
"""What one process runs: ``(index, port) -> exit code``."""


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT and not listening: the
    processes can bind the port beside it, a program without SO_REUSEPORT cannot,
    and it receives no connection. Port 0 picks a free port (``getsockname``)."""
    bare = host.strip().strip("[]") or "0.0.0.0"  # noqa: S104 (reserving, not serving)
    sock = socket.socket(_family(bare), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((bare, port))
    except BaseException:
        sock.close()
        raise
    return sock


def use_multiprocess_metrics(directory: Path) -> None:
    """Make the metrics this process creates from now on write ``directory``'s
    multiprocess files (prometheus_client picks its value class from the
    environment; a forked process re-reads it here)."""
    os.environ[MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when ``parent`` dies (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class Supervisor:
    """Runs ``count`` processes of ``worker_main`` on one port and watches them.

    Attributes:
        count: the number of server processes (2 or more).
        host, port: the gRPC bind address; port 0 picks one, passed to every process.
        grace_seconds: the processes' shutdown grace (they apply it themselves).
        metrics_host, metrics_port: the one ``/metrics`` listener; port 0: none.
        worker_main: what a process runs, ``(index, port) -> exit code``.
        log: the supervisor's logger.
    """

    count: int
    host: str
    port: int
    grace_seconds: float
    metrics_host: str
    metrics_port: int
    worker_main: WorkerMain
    log: FilteringBoundLogger

    def run(self) -> int:
        """Start the processes, supervise them until they have all exited; the exit code."""
        reservation = reserve_port(self.host, self.port)
        port = int(reservation.getsockname()[1])
        metrics_dir, owned = _metrics_directory()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        received: list[signal.Signals] = []

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            received.append(signal.Signals(signum))

        previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
        previous_wakeup = signal.set_wakeup_fd(wake_w)
        metrics_http: MetricsHttpServer | None = None
        failed = 0
        try:
            context = multiprocessing.get_context("fork")
            processes: list[BaseProcess] = []

            def child(index: int) -> None:
                # Runs in the new process: nothing of the supervisor's stays wired.
                signal.set_wakeup_fd(-1)
                for sig in STOP_SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)  # still blocked until the server's own
                os.close(wake_r)
                os.close(wake_w)
                reservation.close()
                _die_with_parent(supervisor_pid)
                use_multiprocess_metrics(metrics_dir)
                sys.exit(self.worker_main(index, port))

            supervisor_pid = os.getpid()
            # Blocked across the fork, so a new process keeps a stop signal pending
            # until its server can stop gracefully; here they wait until the forks are done.
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                for index in range(self.count):
                    process = context.Process(
                        target=child, args=(index,), name=f"worker-{index}", daemon=False
                    )
                    process.start()
                    processes.append(process)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            if self.metrics_port:
                registry = CollectorRegistry()
                multiprocess.MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
                try:
                    metrics_http = start_metrics_server(
                        registry, self.metrics_host, self.metrics_port
                    )
                except OSError as exc:
                    # One line, no trace: the port is taken (checked before, lost since).
                    self.log.error("supervisor.metrics_failed", error=str(exc))  # noqa: TRY400
                    failed = 2
                    received.append(signal.SIGTERM)
            self.log.info(
                "supervisor.started",
                workers=self.count,
                pids=[process.pid for process in processes],
                port=port,
                metrics_port=None if metrics_http is None else metrics_http.port,
                metrics_dir=str(metrics_dir),
            )
            code = self._supervise(processes, received, wake_r, metrics_dir) or failed
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(wake_r)
            os.close(wake_w)
            reservation.close()
            if metrics_http is not None:
                metrics_http.close()
            if owned:
                shutil.rmtree(metrics_dir, ignore_errors=True)
        self.log.info("supervisor.stopped", exit_code=code)
        return code

    def _supervise(
        self,
        processes: list[BaseProcess],
        received: list[signal.Signals],
        wake_r: int,
        metrics_dir: Path,
    ) -> int:
        alive = {process.sentinel: process for process in processes}
        code = 0
        handled = 0  # signals acted upon
        deadline: float | None = None  # set once the stop began

        def stop_all(sig: signal.Signals) -> None:
            for process in alive.values():
                if process.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.pid, sig)

        while alive:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = wait([*alive, wake_r], timeout)
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 512):
                        pass
            for sentinel in ready:
                process = alive.pop(sentinel, None) if isinstance(sentinel, int) else None
                if process is None:
                    continue
                process.join()
                exit_code = process.exitcode
                if process.pid is not None:
                    multiprocess.mark_process_dead(process.pid, str(metrics_dir))  # type: ignore[no-untyped-call]
                if deadline is None:
                    self.log.error(
                        "supervisor.worker_exited",
                        worker=process.name,
                        worker_pid=process.pid,
                        exit_code=exit_code,
                        hint="stopping the other workers; the supervisor exits non-zero",
                    )
                    code = exit_code if exit_code is not None and exit_code > 0 else 1
                    deadline = time.monotonic() + self.grace_seconds + EXIT_MARGIN_SECONDS
                    stop_all(signal.SIGTERM)
                else:
                    self.log.info(
                        "supervisor.worker_stopped",
                        worker=process.name,
                        worker_pid=process.pid,
                        exit_code=exit_code,
                    )
                    if exit_code != 0 and code == 0:
                        code = 1
            while handled < len(received):
                sig = received[handled]
                handled += 1
                if deadline is None:
                    self.log.info("supervisor.signal", signal=sig.name, workers=len(alive))
                    deadline = time.monotonic() + self.grace_seconds + EXIT_MARGIN_SECONDS
                    stop_all(signal.SIGTERM)
                elif alive:
                    self.log.warning("supervisor.second_signal_kills", signal=sig.name)
                    deadline = time.monotonic()
            if deadline is not None and alive and time.monotonic() >= deadline:
                self.log.error("supervisor.killing", workers=[p.name for p in alive.values()])
                stop_all(signal.SIGKILL)
                for process in alive.values():
                    process.join()
                    if process.pid is not None:
                        multiprocess.mark_process_dead(process.pid, str(metrics_dir))  # type: ignore[no-untyped-call]
                alive.clear()
                code = code or 1
        return code


def _metrics_directory() -> tuple[Path, bool]:
    """The multiprocess metrics directory, emptied of a previous run's files, and
    whether it is ours to remove (a fresh temporary one when the variable is unset)."""
    configured = os.environ.get(MULTIPROC_ENV)
    if not configured:
        return Path(tempfile.mkdtemp(prefix="marketplace-metrics-")), True
    directory = Path(configured)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    return directory, False
