"""Event-loop lag of a server process, sampled while it serves."""

from __future__ import annotations

import asyncio
import statistics
import time

INTERVAL = 0.005  # seconds between samples


class LoopLag:
    """How late a 5 ms sleep wakes up, sampled continuously; read and reset per round."""

    def __init__(self) -> None:
        self._samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._sample())

    async def _sample(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(INTERVAL)
            self._samples.append(time.perf_counter() - started - INTERVAL)

    def take_p99_ms(self) -> float:
        """p99 lag in ms since the last call (0.0 with too few samples); resets the samples."""
        samples, self._samples = self._samples, []
        if len(samples) < 2:
            return 0.0
        return statistics.quantiles(samples, n=100)[98] * 1000

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
