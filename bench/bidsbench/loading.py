"""The COPY loads: PENDING bids to withdraw, and the tasks ListTasks pages through."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg  # type: ignore[import-untyped]

from bidsbench.common import LIST_INDEX, Sizes
from bidsbench.instances import AGENT

BID_COLUMNS = (
    "bid_id",
    "marketplace",
    "job_id",
    "agent_id",
    "amount_currency",
    "amount_units",
    "amount_nanos",
    "proposal",
    "status",
    "created_at",
    "updated_at",
)


async def place_pending_bids(dsn: str, count: int, *, job_prefix: str = "job") -> list[str]:
    """``count`` PENDING bids of the bench agent (one per job), loaded with COPY."""
    now = datetime.now(UTC)
    ids = [str(uuid.uuid4()) for _ in range(count)]
    records = [
        (
            bid_id,
            "bench",
            f"{job_prefix}-{i}",
            AGENT,
            "EUR",
            250,
            500_000_000,
            "I will do it well.",
            "PENDING",
            now,
            now,
        )
        for i, bid_id in enumerate(ids)
    ]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table("bids", records=records, columns=BID_COLUMNS)
    finally:
        await conn.close()
    return ids


TASK_COLUMNS = (
    "task_id",
    "client_email",
    "title",
    "description",
    "budget_currency",
    "budget_units",
    "budget_nanos",
    "status",
    "created_at",
    "updated_at",
)
STATUSES = ("PENDING", "PROCESSING", "COMPLETED", "FAILED")


@dataclass(frozen=True)
class LoadedTasks:
    heavy: str  # the client with deep_tasks tasks
    sample: list[str]  # ordinary clients to list
    note: str


def task_records(sizes: Sizes, emails: list[str], heavy: str) -> Iterator[tuple[object, ...]]:
    rng, base = random.Random(7), datetime(2025, 1, 1, tzinfo=UTC)
    span = 365 * 86_400 * 1_000_000
    for i in range(sizes.tasks):
        email = heavy if i < sizes.deep_tasks else emails[i % len(emails)]
        created = base + timedelta(microseconds=rng.randrange(span))
        yield (
            str(uuid.uuid4()),
            email,
            "Benchmark task",
            "Loaded by bench/bids_bench.py.",
            "EUR",
            100 + i % 900,
            0,
            STATUSES[i % 4],
            created,
            created,
        )


async def load_tasks(dsn: str, sizes: Sizes) -> LoadedTasks:
    """COPY the tasks into the migrated table, rebuild its secondary indexes, VACUUM ANALYZE."""
    emails = [f"client{i:05d}@example.com" for i in range(sizes.clients)]
    heavy = "deep.pager@example.com"
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET maintenance_work_mem = '256MB'; SET synchronous_commit = off")
        indexes = await conn.fetch(
            "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS ddl "
            "FROM pg_index i WHERE i.indrelid = 'tasks'::regclass AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
        )
        if LIST_INDEX not in {row["name"] for row in indexes}:
            raise RuntimeError(f"the migrations did not create {LIST_INDEX}")
        for row in indexes:  # a bulk load is faster with the indexes built once, after it
            await conn.execute(f'DROP INDEX "{row["name"]}"')
        records = task_records(sizes, emails, heavy)
        await conn.copy_records_to_table("tasks", records=records, columns=TASK_COLUMNS)
        copied = time.perf_counter() - started
        for row in indexes:  # the migrations' own definitions, as pg_get_indexdef gave them
            await conn.execute(row["ddl"])
        await conn.execute("VACUUM (ANALYZE) tasks")
        count = await conn.fetchval("SELECT count(*) FROM tasks")
    finally:
        await conn.close()
    note = (
        f"loaded {count:,} tasks ({sizes.clients:,} clients + one with {sizes.deep_tasks:,}) in "
        f"{time.perf_counter() - started:.1f} s: COPY {copied:.1f} s, then the {len(indexes)} "
        f"secondary indexes rebuilt from their migrated definitions, VACUUM ANALYZE"
    )
    return LoadedTasks(heavy, random.Random(3).sample(emails, min(50, len(emails))), note)
