"""The dev runner (``make run`` = scripts/run_dev.py) and the console scripts on busy ports:
one line naming the port and the variable that moves it; the runner waits for health and
stops execution before bids."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from marketplace_common.health_probe import ProbeExit, probe

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
RUNNER = ROOT / "scripts" / "run_dev.py"


@pytest.fixture
def listener() -> Iterator[int]:
    """A port some other program is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def dev_env(tmp_path: Path, **ports: int) -> dict[str, str]:
    env = {
        **os.environ,
        "BIDS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bids.db'}",
        "EXECUTION_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'execution.db'}",
        "BIDS_LOG_JSON": "true",
        "EXECUTION_LOG_JSON": "true",
        "EXECUTION_SHUTDOWN_GRACE_SECONDS": "2",
        "BIDS_SHUTDOWN_GRACE_SECONDS": "2",
    }
    env.pop("EXECUTION_BIDS_TARGET", None)
    env.update({name: str(port) for name, port in ports.items()})
    return env


def test_runner_on_a_busy_port_says_which_and_how_to_move_it(tmp_path: Path, listener: int) -> None:
    grpc_b, metrics_b, grpc_e = free_ports(3)
    env = dev_env(
        tmp_path,
        BIDS_GRPC_PORT=grpc_b,
        BIDS_METRICS_PORT=metrics_b,
        EXECUTION_GRPC_PORT=grpc_e,
        EXECUTION_METRICS_PORT=listener,
    )
    result = subprocess.run(
        [sys.executable, str(RUNNER)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {listener}" in lines[0]
    assert "EXECUTION_METRICS_PORT" in lines[0]
    assert not (tmp_path / "bids.db").exists()  # nothing was started


@pytest.mark.parametrize("kind", ["GRPC", "METRICS"])
def test_service_on_a_busy_port_refuses_in_one_line(
    tmp_path: Path, listener: int, kind: str
) -> None:
    grpc_port, metrics_port = free_ports(2)
    ports = {"BIDS_GRPC_PORT": grpc_port, "BIDS_METRICS_PORT": metrics_port}
    ports[f"BIDS_{kind}_PORT"] = listener
    result = subprocess.run(
        [str(BIN / "bids-service"), "serve", "--migrate"],
        env=dev_env(tmp_path, **ports),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    plain = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(plain) == 1, result.stderr
    assert f"port {listener}" in plain[0]
    assert f"BIDS_{kind}_PORT" in plain[0]


def _events(output: str) -> list[str]:
    events = []
    for line in output.splitlines():
        if line.startswith("{"):
            events.append(str(json.loads(line).get("event")))
        elif line.startswith("make run: "):
            events.append(line)
    return events


@pytest.mark.slow
def test_runner_waits_for_health_and_stops_execution_before_bids(tmp_path: Path) -> None:
    grpc_b, metrics_b, grpc_e, metrics_e = free_ports(4)
    env = dev_env(
        tmp_path,
        BIDS_GRPC_PORT=grpc_b,
        BIDS_METRICS_PORT=metrics_b,
        EXECUTION_GRPC_PORT=grpc_e,
        EXECUTION_METRICS_PORT=metrics_e,
    )
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        runner = subprocess.Popen(
            [sys.executable, str(RUNNER)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 90
        while "execution-service SERVING" not in log.read_text():
            assert runner.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        # "SERVING" was said only once health answered so: both answer now.
        bids = probe(f"127.0.0.1:{grpc_b}", "marketplace.bids.v1.BidService", timeout=5)
        execution = probe(
            f"127.0.0.1:{grpc_e}", "marketplace.execution.v1.ExecutionService", timeout=5
        )
        assert (bids.code, execution.code) == (ProbeExit.SERVING, ProbeExit.SERVING)
        runner.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert runner.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    events = _events(log.read_text())
    order = [
        "make run: stopping execution-service",
        "worker_pool.stopped",  # the execution service only
        "make run: stopping bids-service",
    ]
    positions = [events.index(e) for e in order]
    assert positions == sorted(positions), events
    # bids began its stop (health NOT_SERVING) only after execution had stopped.
    stops = [i for i, e in enumerate(events) if e == "server.stopped"]
    assert len(stops) == 2
    starting = [i for i, e in enumerate(events) if e == "server.stopping"]
    assert starting[1] > stops[0]
