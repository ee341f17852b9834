"""Fixtures for the execution service's LLM layer: a virtual clock."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta

import pytest

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock:
    """Virtual time that jumps ahead whenever every task is waiting on it.

    ``sleep`` parks the caller until virtual time reaches its wake-up; a
    driver task lets the event loop settle, then jumps to the earliest
    wake-up (like trio's autojump clock). Concurrent sleepers therefore see
    consistent time, and a test of minutes of pacing runs in milliseconds.
    ``sleeps`` lists every requested duration.
    """

    def __init__(self) -> None:
        self.now_s = 0.0
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._driver: asyncio.Task[None] | None = None

    def monotonic(self) -> float:
        return self.now_s

    def now(self) -> datetime:
        return _EPOCH + timedelta(seconds=self.now_s)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now_s + seconds, next(self._order), future))
        if self._driver is None or self._driver.done():
            self._driver = asyncio.create_task(self._drive())
        await future

    async def _drive(self) -> None:
        while self._sleepers:
            for _ in range(50):  # let every runnable task reach its next wait
                await asyncio.sleep(0)
            wake_at, _, future = heapq.heappop(self._sleepers)
            self.now_s = max(self.now_s, wake_at)
            if not future.done():
                future.set_result(None)
            while self._sleepers and self._sleepers[0][0] <= self.now_s:
                _, _, due = heapq.heappop(self._sleepers)
                if not due.done():
                    due.set_result(None)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
