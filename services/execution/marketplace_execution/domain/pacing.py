"""Pacing of LLM calls: a jittered pause and a concurrency limit.

Everything waits with ``await clock.sleep`` (``asyncio.sleep`` on the system
clock), never ``time.sleep``: thousands of paced calls share one event loop
without blocking it. Tests pass a fake clock.

The jittered pause is taken *before* a concurrency slot (``asyncio.Semaphore``,
held until the call ends) is held, so paused calls do not occupy slots (1,000
calls with a 1 s pause take ~1 s, not 1,000 / limit seconds). Rate limits are
the provider keys' (``domain.limits``), shared by every replica.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from marketplace_common.retrying import Clock, SystemClock


@dataclass(frozen=True, slots=True)
class PacingConfig:
    """How to pace calls.

    Attributes:
        delay: the pause before each call, seconds.
        jitter: the pause varies uniformly by +/- this fraction of ``delay``
            (0.1 means 0.9 to 1.1 times the delay).
        max_concurrency: calls in flight at once; None for no limit.
    """

    delay: float = 0.0
    jitter: float = 0.0
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        if self.delay < 0:
            raise ValueError("delay must not be negative")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")


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
        self.in_flight += 1
        try:
            yield max(0.0, self._clock.monotonic() - started)
        finally:
            self.in_flight -= 1
            if self._slots is not None:
                self._slots.release()

    async def _pause(self) -> None:
        delay, jitter = self.config.delay, self.config.jitter
        if delay <= 0:
            return
        if jitter:
            delay *= 1.0 + self._rng.uniform(-jitter, jitter)
        await self._clock.sleep(delay)
