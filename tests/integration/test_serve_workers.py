"""``serve --workers N``: N server processes on one port under a supervisor, for real.

Real console scripts on real ports and real PostgreSQL databases: the port is
shared (SO_REUSEPORT) and connections land on both processes; migrations run
once, in the supervisor; every process serves health; the one ``/metrics``
sums what both served; SIGTERM drains every process's calls within the grace;
a process that dies makes the supervisor exit non-zero; a busy port and SQLite
are refused in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import grpc
import pytest
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from service_processes import BIN, clean_environment, free_port
from table_ledger import libpq_dsn

START_TIMEOUT_S = 40.0


@dataclass
class Supervised:
    """One ``<prog> serve --workers N`` process and its JSON log."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                found.append(json.loads(raw))
            except ValueError:
                continue
        return found

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events(name)) < count:
            if self.proc.poll() is not None:
                pytest.fail(f"exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {count} x {name} after {timeout} s:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def wait_for_lines(self, name: str, count: int, timeout: float = 20.0) -> None:
        """Like wait_for, once the supervisor itself is gone."""
        deadline = time.monotonic() + timeout
        while len(self.events(name)) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"no {count} x {name} after {timeout} s:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def worker_pids(self) -> list[int]:
        return [int(pid) for pid in self.events("supervisor.started")[0]["pids"]]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.worker_pids() if self.events("supervisor.started") else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def start(
    prog: str, settings: dict[str, str], tmp_path: Path, *args: str, session: bool = False
) -> Supervised:
    log_path = tmp_path / f"{prog}-{uuid.uuid4().hex[:6]}.log"
    prefix = "BIDS" if prog == "bids-service" else "EXECUTION"
    port = int(settings[f"{prefix}_GRPC_PORT"])
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [str(BIN / prog), "serve", *args],
            cwd=tmp_path,
            env={**clean_environment(), f"{prefix}_LOG_JSON": "true", **settings},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=session,
        )
    return Supervised(proc, log_path, port)


@pytest.fixture
def bids_settings(pg_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "BIDS_DATABASE_URL": pg_url,
        "BIDS_GRPC_PORT": str(free_port()),
        "BIDS_METRICS_PORT": str(free_port()),
        "BIDS_SHUTDOWN_GRACE_SECONDS": "6",
        "BIDS_DB_POOL_SIZE": "8",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }


@pytest.fixture
def supervised() -> Iterator[list[Supervised]]:
    started: list[Supervised] = []
    yield started
    for each in started:
        each.stop()


def _get_bid(port: int, bid_id: str, timeout: float = 20.0) -> grpc.StatusCode:
    """One GetBid on a connection of its own (a new connection may land on either process)."""
    # A local subchannel pool: channels to one target would share a connection otherwise.
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options) as channel:
        try:
            bids_pb2_grpc.BidServiceStub(channel).GetBid(
                bids_pb2.GetBidRequest(bid_id=bid_id), timeout=timeout
            )
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def _metric(port: int, name: str, **labels: str) -> float:
    """The sum of the series of ``name`` with ``labels`` (one /metrics scrape)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        series, value = line.rsplit(" ", 1)
        if all(f'{key}="{wanted}"' in series for key, wanted in labels.items()):
            total += float(value)
    return total


def _series(port: int, name: str) -> list[str]:
    """The exposition lines of ``name`` (one /metrics scrape)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return [line for line in text.splitlines() if line.startswith((name + "{", name + " "))]


def _handled_by_pid(server: Supervised, method: str) -> Counter[int]:
    return Counter(
        int(line["pid"])
        for line in server.events("rpc.handled")
        if line.get("method", "").endswith(method)
    )


def test_two_processes_share_the_port_migrate_once_and_sum_their_metrics(
    bids_settings: dict[str, str], tmp_path: Path, supervised: list[Supervised]
) -> None:
    server = start("bids-service", bids_settings, tmp_path, "--migrate", "--workers", "2")
    supervised.append(server)
    server.wait_for("bids.serving", count=2)
    server.wait_for("supervisor.started")
    pids = server.worker_pids()
    serving = server.events("bids.serving")
    assert sorted((line["worker"], line["pid"]) for line in serving) == sorted(
        zip([0, 1], pids, strict=True)
    )
    assert len(set(pids)) == 2
    assert server.proc.pid not in pids
    # Migrations ran once, in the supervisor (its lines carry no worker).
    upgrades = [line for line in server.lines() if "Running upgrade" in str(line.get("event"))]
    assert upgrades
    assert all("worker" not in line for line in upgrades)
    assert len([line for line in upgrades if "-> 0001" in line["event"]]) == 1

    # New connections land on both processes (the kernel hashes each connection).
    calls = 0
    for _ in range(200):
        assert _get_bid(server.port, str(uuid.uuid4())) == grpc.StatusCode.NOT_FOUND
        calls += 1
        if calls >= 10 and len(_handled_by_pid(server, "GetBid")) == 2:
            break
    deadline = time.monotonic() + 10
    while sum(_handled_by_pid(server, "GetBid").values()) < calls and time.monotonic() < deadline:
        time.sleep(0.1)
    by_pid = _handled_by_pid(server, "GetBid")
    assert set(by_pid) == set(pids), by_pid
    assert sum(by_pid.values()) == calls
    # One exposition, on the supervisor's port, sums both processes.
    metrics_port = int(bids_settings["BIDS_METRICS_PORT"])
    handled = _metric(
        metrics_port, "grpc_server_handled_total", grpc_method="GetBid", grpc_code="NotFound"
    )
    assert handled == calls
    assert _metric(metrics_port, "grpc_server_started_total", grpc_method="GetBid") == calls

    # The health command asks the shared port; any process answers SERVING.
    health = subprocess.run(
        [str(BIN / "bids-service"), "health"],
        env={**clean_environment(), "BIDS_GRPC_PORT": str(server.port)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert health.returncode == 0, health.stdout + health.stderr

    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(20) == 0, server.log()[-4000:]
    assert time.monotonic() - started < float(bids_settings["BIDS_SHUTDOWN_GRACE_SECONDS"]) + 5
    stopped = {
        line["worker_pid"]: line["exit_code"] for line in server.events("supervisor.worker_stopped")
    }
    assert stopped == dict.fromkeys(pids, 0)


def new_id() -> str:
    return str(uuid.uuid4())


async def _hold_bids_table(pg_url: str, release: threading.Event, held: threading.Event) -> None:
    connection = await asyncpg.connect(libpq_dsn(pg_url))
    try:
        async with connection.transaction():
            await connection.execute("LOCK TABLE bids IN ACCESS EXCLUSIVE MODE")
            held.set()
            await asyncio.to_thread(release.wait, 60)
    finally:
        await connection.close()


def test_sigterm_drains_the_calls_of_every_process_and_exits_zero(
    bids_settings: dict[str, str], tmp_path: Path, supervised: list[Supervised], pg_url: str
) -> None:
    server = start("bids-service", bids_settings, tmp_path, "--migrate", "--workers", "2")
    supervised.append(server)
    server.wait_for("bids.serving", count=2)
    server.wait_for("supervisor.started")
    pids = server.worker_pids()
    # A lock on the bids table holds every GetBid in the database: calls in flight.
    release, held = threading.Event(), threading.Event()
    locker = threading.Thread(target=asyncio.run, args=(_hold_bids_table(pg_url, release, held),))
    locker.start()
    try:
        assert held.wait(20)
        results: list[grpc.StatusCode] = []
        callers = [
            threading.Thread(
                target=lambda: results.append(_get_bid(server.port, str(uuid.uuid4())))
            )
            for _ in range(12)
        ]
        for caller in callers:
            caller.start()
        time.sleep(1.5)  # every call has reached the database and waits on the lock
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for("server.stopping", count=2, timeout=10)
        time.sleep(0.5)
        release.set()  # the in-flight calls can finish now, within the grace
        for caller in callers:
            caller.join(30)
    finally:
        release.set()
        locker.join(30)
    assert server.proc.wait(20) == 0, server.log()[-4000:]
    elapsed = time.monotonic() - started
    assert results == [grpc.StatusCode.NOT_FOUND] * 12  # each finished, none was cut off
    by_pid = _handled_by_pid(server, "GetBid")
    assert set(by_pid) == set(pids), by_pid  # both processes drained calls of their own
    assert elapsed < float(bids_settings["BIDS_SHUTDOWN_GRACE_SECONDS"]) + 5


def test_a_process_that_dies_stops_the_others_and_the_supervisor_exits_non_zero(
    bids_settings: dict[str, str], tmp_path: Path, supervised: list[Supervised]
) -> None:
    server = start("bids-service", bids_settings, tmp_path, "--migrate", "--workers", "2")
    supervised.append(server)
    server.wait_for("bids.serving", count=2)
    server.wait_for("supervisor.started")
    dead, other = server.worker_pids()
    os.kill(dead, signal.SIGKILL)
    assert server.proc.wait(20) == 1, server.log()[-4000:]
    [exited] = server.events("supervisor.worker_exited")
    assert (exited["worker_pid"], exited["exit_code"]) == (dead, -signal.SIGKILL)
    # The other one was stopped gracefully, not left behind.
    stopped = server.events("supervisor.worker_stopped")
    assert [(line["worker_pid"], line["exit_code"]) for line in stopped] == [(other, 0)]
    with pytest.raises(ProcessLookupError):
        os.kill(other, 0)


def test_ctrl_c_to_the_process_group_stops_every_process_gracefully(
    bids_settings: dict[str, str], tmp_path: Path, supervised: list[Supervised]
) -> None:
    # A terminal's Ctrl-C reaches the supervisor and its processes at once; the
    # supervisor's SIGTERM that follows must not cut a stopping process short.
    server = start(
        "bids-service", bids_settings, tmp_path, "--migrate", "--workers", "2", session=True
    )
    supervised.append(server)
    server.wait_for("bids.serving", count=2)
    server.wait_for("supervisor.started")
    pids = server.worker_pids()
    os.killpg(server.proc.pid, signal.SIGINT)
    assert server.proc.wait(20) == 0, server.log()[-4000:]
    stopped = {
        line["worker_pid"]: line["exit_code"] for line in server.events("supervisor.worker_stopped")
    }
    assert stopped == dict.fromkeys(pids, 0)
    # One stop per process: the second signal (SIGINT or the forwarded SIGTERM,
    # whichever it handled first) was ignored, not a second, abrupt stop.
    signals = server.events("server.signal")
    assert sorted(line["pid"] for line in signals) == sorted(pids)
    assert {line["signal"] for line in signals} <= {"SIGINT", "SIGTERM"}


def test_processes_stop_when_the_supervisor_is_killed(
    bids_settings: dict[str, str], tmp_path: Path, supervised: list[Supervised]
) -> None:
    server = start("bids-service", bids_settings, tmp_path, "--migrate", "--workers", "2")
    supervised.append(server)
    server.wait_for("bids.serving", count=2)
    server.wait_for("supervisor.started")
    server.proc.kill()
    server.proc.wait()
    server.wait_for_lines("server.stopped", count=2)  # gracefully, each on its own
    deadline = time.monotonic() + 10
    alive = server.worker_pids()
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _running(pid)]
        time.sleep(0.1)
    assert alive == []


def _running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, reaped by init soon, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("reuse_port", [False, True])
def test_a_busy_port_is_refused_in_one_line(
    bids_settings: dict[str, str], tmp_path: Path, reuse_port: bool
) -> None:
    port = int(bids_settings["BIDS_GRPC_PORT"])
    with socket.socket() as squatter:
        # Another program, even one that would share the port, keeps it.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reuse_port))
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = subprocess.run(
            [str(BIN / "bids-service"), "serve", "--migrate", "--workers", "2"],
            env={**clean_environment(), **bids_settings},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"port {port} (gRPC) on 127.0.0.1 is in use" in result.stderr
    assert "BIDS_GRPC_PORT" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("prog", ["bids-service", "execution-service"])
def test_several_processes_on_sqlite_are_refused(prog: str, tmp_path: Path) -> None:
    prefix = "BIDS" if prog == "bids-service" else "EXECUTION"
    result = subprocess.run(
        [str(BIN / prog), "serve", "--migrate"],
        env={
            **clean_environment(),
            f"{prefix}_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
            f"{prefix}_GRPC_PORT": str(free_port()),
            f"{prefix}_METRICS_PORT": "0",
            f"{prefix}_PROCESSES": "3",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "3 server processes need PostgreSQL" in result.stderr
    assert f"{prefix}_DATABASE_URL" in result.stderr
    assert not (tmp_path / "db.sqlite").exists()  # refused before anything was opened


def test_execution_service_serves_with_two_processes(
    pg_url: str, tmp_path: Path, supervised: list[Supervised]
) -> None:
    settings = {
        "EXECUTION_DATABASE_URL": pg_url,
        "EXECUTION_GRPC_PORT": str(free_port()),
        "EXECUTION_METRICS_PORT": str(free_port()),
        "EXECUTION_SHUTDOWN_GRACE_SECONDS": "3",
        "EXECUTION_LLM_PROVIDER": "offline",
        "EXECUTION_WORKERS": "2",
        "EXECUTION_DB_POOL_SIZE": "3",
        "EXECUTION_BIDS_TARGET": f"127.0.0.1:{free_port()}",
    }
    server = start("execution-service", settings, tmp_path, "--migrate", "--workers", "2")
    supervised.append(server)
    server.wait_for("execution.serving", count=2)
    server.wait_for("supervisor.started")
    health = subprocess.run(
        [str(BIN / "execution-service"), "health"],
        env={**clean_environment(), "EXECUTION_GRPC_PORT": settings["EXECUTION_GRPC_PORT"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert health.returncode == 0, health.stdout + health.stderr
    # The queue gauges (each process reads the same queue) are one series, the latest
    # value of a live process: not one series per pid.
    metrics_port = int(settings["EXECUTION_METRICS_PORT"])
    for gauge in ("execution_queue_depth", "execution_queue_oldest_age_seconds"):
        assert _series(metrics_port, gauge) == [f"{gauge} 0.0"]
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(20) == 0, server.log()[-4000:]
    assert len(server.events("supervisor.worker_stopped")) == 2
