"""The provider-key limiter shared through PostgreSQL: two replicas' engines, one timeline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from marketplace_common.db import create_engine
from marketplace_common.migrations import upgrade_async
from marketplace_execution.domain.limits import KeyLimits, LimitSettings, ProviderLimiter
from marketplace_execution.migrations import MIGRATIONS_DIR
from marketplace_execution.storage.limits import SqlLimitState
from sqlalchemy.ext.asyncio import AsyncEngine


@pytest.fixture
async def two_engines(pg_url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    await upgrade_async(pg_url, MIGRATIONS_DIR)
    engines = (create_engine(pg_url), create_engine(pg_url))
    yield engines
    for engine in engines:
        await engine.dispose()


def _limiter(engine: AsyncEngine, rpm: float) -> ProviderLimiter:
    settings = LimitSettings(default=KeyLimits(requests_per_minute=rpm), margin=0.0)
    return ProviderLimiter(SqlLimitState(engine), settings)


async def test_two_replicas_share_one_evenly_spaced_rate(
    two_engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    limiters = [_limiter(engine, rpm=600) for engine in two_engines]  # one call per 0.1 s

    async def one(i: int) -> float:
        await limiters[i % 2].permit("openai", "m", 1, None)
        return time.monotonic()

    times = sorted(await asyncio.gather(*(one(i) for i in range(20))))
    # 20 permits at 10 a second from both replicas take at least 1.9 s, and no
    # 1 s span holds more than 10 (+1 for timer slack at the edges).
    assert times[-1] - times[0] >= 1.9 - 0.05
    for i in range(len(times) - 11):
        assert times[i + 11] - times[i] >= 1.0 - 0.05, times


async def test_a_cooldown_set_by_one_replica_holds_back_the_other(
    two_engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    first, second = (_limiter(engine, rpm=6000) for engine in two_engines)
    await second.permit("openai", "m", 1, None)
    assert await first.cool_down("openai:m", 1.5) == pytest.approx(1.5, abs=0.1)
    started = time.monotonic()
    permit = await second.permit("openai", "m", 1, None)
    assert time.monotonic() - started >= 1.4
    assert permit.waited >= 1.4
    # A cooldown without a delay starts at base (1 s, jittered down to half) and
    # counts a streak that the next success resets.
    pause = await first.cool_down("openai:m", None)
    assert 0.0 < pause <= 2.0 + 0.1
    state = await second.state.cooldown("openai:m")
    assert state.left > 0


async def test_a_waiting_permit_books_again_after_a_cooldown_from_elsewhere(
    two_engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    first, second = (_limiter(engine, rpm=60) for engine in two_engines)
    await first.permit("openai", "m", 1, None)  # the next slot is 1 s away
    started = time.monotonic()
    waiting = asyncio.create_task(first.permit("openai", "m", 1, None))
    await asyncio.sleep(0.3)
    await second.cool_down("openai:m", 2.0)
    await waiting
    # It would have gone at 1 s; the cooldown from the other replica moved it to >= 2.3 s.
    assert time.monotonic() - started >= 2.2


async def test_settling_gives_back_unused_tokens_and_resets_the_streak(
    two_engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    settings = LimitSettings(default=KeyLimits(tokens_per_minute=6000), margin=0.0)  # 100/s
    first, second = (ProviderLimiter(SqlLimitState(e), settings) for e in two_engines)
    await first.cool_down("openai:m", 0.01)  # the row exists after a permit; make one
    permit = await first.permit("openai", "m", 1000, None)  # 10 s of tokens
    assert permit.streak == 1
    await first.settle(permit, "m", 100)  # 9 s given back, streak reset
    started = time.monotonic()
    again = await second.permit("openai", "m", 100, None)
    assert time.monotonic() - started < 1.5
    assert again.streak == 0
