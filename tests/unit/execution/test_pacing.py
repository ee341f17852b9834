"""Pacer: jittered pause and concurrency limit, on a virtual clock."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

import pytest
from marketplace_execution.domain.pacing import Pacer, PacingConfig

if TYPE_CHECKING:
    from tests.unit.execution.conftest import FakeClock


async def test_pause_is_jittered_within_its_bounds_and_reported(clock: FakeClock) -> None:
    pacer = Pacer(PacingConfig(delay=1.0, jitter=0.2), clock=clock, rng=random.Random(5))
    waits = []
    for _ in range(50):
        async with pacer.pace() as waited:
            waits.append(waited)

    assert all(0.8 <= w <= 1.2 for w in waits)
    assert len(set(waits)) > 40
    assert waits == pytest.approx(clock.sleeps)


async def test_no_pacing_configured_means_no_wait(clock: FakeClock) -> None:
    async with Pacer(clock=clock).pace() as waited:
        assert waited == 0.0
    assert clock.sleeps == []


async def test_concurrency_limit_caps_calls_in_flight(clock: FakeClock) -> None:
    pacer = Pacer(PacingConfig(max_concurrency=3), clock=clock)
    peak = 0

    async def call() -> None:
        nonlocal peak
        async with pacer.pace():
            peak = max(peak, pacer.in_flight)
            await clock.sleep(1.0)

    await asyncio.gather(*(call() for _ in range(10)))

    assert peak == 3
    assert clock.monotonic() == pytest.approx(4.0)  # ceil(10 / 3) rounds of 1 s


async def test_paused_calls_do_not_hold_concurrency_slots(clock: FakeClock) -> None:
    pacer = Pacer(PacingConfig(delay=1.0, max_concurrency=2), clock=clock)

    async def call() -> None:
        async with pacer.pace():
            pass

    await asyncio.gather(*(call() for _ in range(100)))

    assert clock.monotonic() == pytest.approx(1.0)


def test_nonsense_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        PacingConfig(max_concurrency=0)
