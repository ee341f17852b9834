"""Pacing of LLM calls: a jittered pause, a concurrency limit and a rate limit.

Everything waits with ``await clock.sleep`` (``asyncio.sleep`` on the system
clock), never ``time.sleep``: thousands of paced calls share one event loop
without blocking it. Tests pass a fake clock.

Order of the steps for one call, and why:

1. the jittered pause, taken *before* a concurrency slot is held, so paused
   calls do not occupy slots (1,000 calls with a 1 s pause take ~1 s, not
   1,000 / limit seconds);
2. the concurrency slot (``asyncio.Semaphore``), held until the call ends;
3. the requests-per-minute window, taken while holding the slot, so the
   moment a call may start is the moment it is sent (taking it before the
   slot would let queued calls burst past the rate when slots free up).
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from marketplace_common.retrying import Clock, SystemClock

_WINDOW_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class PacingConfig:
    """How to pace calls.

    Attributes:
        delay: the pause before each call, seconds.
        jitter: the pause varies uniformly by +/- this fraction of ``delay``
            (0.1 means 0.9 to 1.1 times the delay).
        max_concurrency: calls in flight at once; None for no limit.
        requests_per_minute: calls started in any 60 s window; None for no limit.
    """

    delay: float = 0.0
    jitter: float = 0.0
    max_concurrency: int | None = None
    requests_per_minute: int | None = None

    def __post_init__(self) -> None:
        if self.delay < 0:
            raise ValueError("delay must not be negative")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if self.requests_per_minute is not None and self.requests_per_minute < 1:
            raise ValueError("requests_per_minute must be at least 1")


class Pacer:
    """Paces calls; one Pacer is shared by every call to one provider."""

    def __init__(
        self,
        config: PacingConfig | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or PacingConfig()
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        limit = self.config.max_concurrency
        self._slots = asyncio.Semaphore(limit) if limit is not None else None
        self._window: collections.deque[float] = collections.deque()
        self._window_lock = asyncio.Lock()
        self.in_flight = 0

    @asynccontextmanager
    async def pace(self) -> AsyncIterator[float]:
        """Wait for this call's turn; yields the seconds spent waiting (the pacing delay).

        Use as ``async with pacer.pace() as waited: await provider.complete_async(...)``.
        The concurrency slot is held for the body of the ``with`` block.
        """
        started = self._clock.monotonic()
        await self._pause()
        if self._slots is not None:
            await self._slots.acquire()
        try:
            await self._take_rate_slot()
            self.in_flight += 1
            try:
                yield max(0.0, self._clock.monotonic() - started)
            finally:
                self.in_flight -= 1
        finally:
            if self._slots is not None:
                self._slots.release()

    async def _pause(self) -> None:
        delay, jitter = self.config.delay, self.config.jitter
        if delay <= 0:
            return
        if jitter:
            delay *= 1.0 + self._rng.uniform(-jitter, jitter)
        await self._clock.sleep(delay)

    async def _take_rate_slot(self) -> None:
        limit = self.config.requests_per_minute
        if limit is None:
            return
        # One waiter at a time (FIFO through the lock) sleeps until the oldest
        # start leaves the window, so waking waiters never stampede.
        async with self._window_lock:
            while True:
                now = self._clock.monotonic()
                while self._window and self._window[0] <= now - _WINDOW_SECONDS:
                    self._window.popleft()
                if len(self._window) < limit:
                    self._window.append(now)
                    return
                await self._clock.sleep(self._window[0] + _WINDOW_SECONDS - now)
