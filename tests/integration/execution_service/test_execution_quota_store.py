"""The quota counters in the database: concurrent admissions never pass the limit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from marketplace_execution.domain.quota import QuotaWindow
from marketplace_execution.storage.quota import SqlQuotaStore
from sqlalchemy.ext.asyncio import AsyncEngine

MINUTE = QuotaWindow.CALLS_PER_MINUTE
DAY = QuotaWindow.TOKENS_PER_DAY


async def test_concurrent_adds_take_exactly_the_limit(engine: AsyncEngine) -> None:
    # Two stores on the engine stand for two replicas: the count is the database's.
    stores = [SqlQuotaStore(engine), SqlQuotaStore(engine)]
    start = MINUTE.start(datetime.now(UTC))
    taken = await asyncio.gather(
        *(stores[i % 2].add("agent:a", MINUTE, start, 1, 10) for i in range(40))
    )
    assert sum(taken) == 10
    assert await stores[0].used("agent:a", MINUTE, start) == 10
    # Another principal, or the next window, counts from zero.
    assert await stores[1].add("agent:b", MINUTE, start, 1, 10)
    assert await stores[1].add("agent:a", MINUTE, start + timedelta(minutes=1), 1, 10)


async def test_concurrent_admissions_take_exactly_the_limit_and_respect_the_day(
    engine: AsyncEngine,
) -> None:
    stores = [SqlQuotaStore(engine), SqlQuotaStore(engine)]
    now = datetime.now(UTC)
    minute, day = MINUTE.start(now), DAY.start(now)
    results = await asyncio.gather(
        *(stores[i % 2].admit("agent:a", (day, 100), (minute, 7)) for i in range(30))
    )
    assert results.count(None) == 7
    assert results.count(MINUTE) == 23
    # The day's tokens used up: refused on TOKENS_PER_DAY, and no call is taken.
    await stores[0].add("agent:t", DAY, day, 100, None)
    assert await stores[1].admit("agent:t", (day, 100), (minute, 7)) is DAY
    assert await stores[1].used("agent:t", MINUTE, minute) == 0
    assert await stores[0].admit("agent:t", (day, 101), (minute, 7)) is None
    assert await stores[1].used("agent:t", MINUTE, minute) == 1


async def test_unbounded_adds_sum_and_an_amount_over_the_limit_is_refused(
    engine: AsyncEngine,
) -> None:
    store = SqlQuotaStore(engine)
    day = DAY.start(datetime.now(UTC))
    await asyncio.gather(*(store.add("svc:s", DAY, day, 7, None) for _ in range(20)))
    assert await store.used("svc:s", DAY, day) == 140
    assert await store.used("svc:other", DAY, day) == 0
    assert not await store.add("svc:s", MINUTE, day, 5, 4)


async def test_old_counters_are_deleted_when_a_new_minute_starts(engine: AsyncEngine) -> None:
    store = SqlQuotaStore(engine)
    now = MINUTE.start(datetime.now(UTC))
    old = now - timedelta(days=3)
    await store.add("agent:a", MINUTE, old, 1, 5)
    await store.add("agent:a", DAY, DAY.start(old), 50, None)
    await store.add("agent:z", MINUTE, old, 1, 5)
    await store.add("agent:a", MINUTE, now, 1, 5)
    assert await store.used("agent:a", MINUTE, old) == 0
    assert await store.used("agent:a", DAY, DAY.start(old)) == 0
    assert await store.used("agent:z", MINUTE, old) == 1  # only the caller's own are swept


def test_windows_are_the_utc_minute_and_day() -> None:
    now = datetime(2026, 11, 29, 23, 59, 30, 500, tzinfo=UTC)
    assert MINUTE.start(now) == datetime(2026, 11, 29, 23, 59, tzinfo=UTC)
    assert MINUTE.end(now) == datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
    assert DAY.start(now) == datetime(2026, 11, 29, tzinfo=UTC)
    assert DAY.end(now) == datetime(2026, 11, 30, tzinfo=UTC)
