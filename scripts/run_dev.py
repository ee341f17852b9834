"""Run both services in the foreground on the embedded default (what `make run` does).

Starts `bids-service serve --migrate`, waits until it answers health checks,
then starts `execution-service serve --migrate`. Ctrl-C (SIGINT) or SIGTERM
stops both gracefully; if either exits on its own, the other is stopped too
and the exit code says which failed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STOP_TIMEOUT_S = 30.0


def _wait_for_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _start(name: str) -> subprocess.Popen[bytes]:
    # A new process group so a Ctrl-C reaches the children only through us,
    # and they stop in order.
    return subprocess.Popen(  # noqa: S603 (our own console script, fixed arguments)
        [str(BIN / name), "serve", "--migrate"], cwd=ROOT, start_new_session=True
    )


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in reversed(procs):
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    stopping = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    (ROOT / "var").mkdir(exist_ok=True)

    procs = [_start("bids-service")]
    bids_port = int(os.environ.get("BIDS_GRPC_PORT", "50051"))
    if not _wait_for_port("127.0.0.1", bids_port, procs[0], timeout=60):
        _stop_all(procs)
        print("bids-service did not start; see its log above", file=sys.stderr)
        return 1
    procs.append(_start("execution-service"))

    while not stopping and all(p.poll() is None for p in procs):
        time.sleep(0.2)
    _stop_all(procs)
    codes = [p.returncode for p in procs]
    return 0 if stopping and all(c == 0 for c in codes) else max(1, *codes)


if __name__ == "__main__":
    sys.exit(main())
