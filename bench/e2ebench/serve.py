"""``python -m e2ebench.serve bids|execution serve [--migrate]``: a service's own console
script (``bids-service`` / ``execution-service``), with an event-loop lag probe.

The process runs the service's ``main`` unchanged (settings from the environment,
migrations, uvloop, signal handling); the only addition is a task on its event
loop that sleeps 5 ms at a time and records how late it wakes
(``bidsbench.lag.LoopLag``). On SIGUSR1 the process writes the p99 and the
maximum lag (ms) since the previous SIGUSR1 to ``MARKETPLACE_BENCH_LAG_FILE``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from bidsbench.lag import LoopLag
from marketplace_common import runtime

LAG_FILE_ENV = "MARKETPLACE_BENCH_LAG_FILE"

_run = runtime.run


class _Probe(LoopLag):
    def take(self) -> tuple[float, float]:
        """p99 and max lag (ms) since the previous call; resets the samples."""
        samples, self._samples = sorted(self._samples), []
        if not samples:
            return 0.0, 0.0
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        return p99 * 1000, samples[-1] * 1000


def _run_probed(main: Coroutine[Any, Any, Any]) -> Any:
    async def probed() -> Any:
        probe = _Probe()
        probe.start()
        path = os.environ[LAG_FILE_ENV]

        def dump() -> None:
            p99, worst = probe.take()
            with open(path + ".tmp", "w") as out:
                out.write(f"{p99:.3f} {worst:.3f}\n")
            os.replace(path + ".tmp", path)

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)
        try:
            return await main
        finally:
            probe.stop()

    return _run(probed())


def main(argv: list[str]) -> int:
    service, *rest = argv
    runtime.run = _run_probed  # the CLI calls runtime.run(...) for serve
    if service == "bids":
        from marketplace_bids.cli import main as service_main
    elif service == "execution":
        from marketplace_execution.cli import main as service_main
    else:
        raise SystemExit(f"unknown service {service!r}")
    return service_main(rest)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
