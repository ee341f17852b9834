"""The schema: models and migrations agree on both databases, downgrade works,
and every List filter runs on an index on PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from bids_support import migrate
from marketplace_bids.domain.pagination import Keyset
from marketplace_bids.domain.ports import BidFilter, TaskFilter
from marketplace_bids.domain.values import BidStatus, TaskStatus
from marketplace_bids.migrations import SCRIPT_LOCATION
from marketplace_bids.storage.repositories import (
    bid_event_list_statement,
    bid_list_statement,
    task_list_statement,
)
from marketplace_bids.storage.tables import Base
from marketplace_common.db import create_engine
from marketplace_common.migrations import downgrade_async
from sqlalchemy import Connection, inspect
from sqlalchemy.engine import make_url

TABLES = {"tasks", "bids", "bid_events", "task_events", "idempotency_keys", "delivery_tokens"}


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def _run(url: str, fn: Any) -> Any:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


async def test_migrations_match_the_models(raw_db_url: str) -> None:
    await migrate(raw_db_url)
    assert await _run(raw_db_url, _diff) == []


async def test_downgrade_removes_everything_and_upgrade_restores_it(raw_db_url: str) -> None:
    await migrate(raw_db_url)
    await downgrade_async(raw_db_url, SCRIPT_LOCATION, "base")
    assert await _run(raw_db_url, _tables) & TABLES == set()
    await migrate(raw_db_url)
    assert await _run(raw_db_url, _tables) >= TABLES


# --- EXPLAIN on PostgreSQL ------------------------------------------------------

SEED = """
INSERT INTO bids (bid_id, marketplace, job_id, agent_id, amount_currency, amount_units,
                  amount_nanos, proposal, status, created_at, updated_at)
SELECT md5('b' || i)::uuid::text, 'market-' || (i % 10), 'job-' || (i / 8),
       'agent-' || (i % 500), 'EUR', 100, 0, 'p',
       (ARRAY['WITHDRAWN', 'ACCEPTED', 'REJECTED', 'PENDING'])[1 + i % 4],
       now() - i * interval '1 minute', now()
FROM generate_series(1, 40000) AS i;
INSERT INTO tasks (task_id, client_email, title, description, budget_currency, budget_units,
                   budget_nanos, status, created_at, updated_at)
SELECT md5('t' || i)::uuid::text, 'client' || (i % 500) || '@example.com', 't', 'd', 'EUR',
       100, 0, (ARRAY['PENDING', 'PROCESSING', 'COMPLETED', 'FAILED'])[1 + i % 4],
       now() - i * interval '1 minute', now()
FROM generate_series(1, 40000) AS i;
INSERT INTO bid_events (event_id, bid_id, previous_status, new_status, reason, actor, created_at)
SELECT md5('e' || i)::uuid::text, md5('b' || i)::uuid::text, 'PENDING', 'WITHDRAWN', '', 'a',
       now() - i * interval '1 minute'
FROM generate_series(1, 40000) AS i;
ANALYZE;
"""

NOW = datetime.now(UTC)
AFTER = Keyset(NOW - timedelta(days=3), "8" * 8)

TASK_FILTERS = {
    "none": TaskFilter(),
    "client_email": TaskFilter(client_email="client7@example.com"),
    "status": TaskFilter(status=TaskStatus.FAILED),
    "created_range": TaskFilter(
        created_after=NOW - timedelta(days=2), created_before=NOW - timedelta(days=1)
    ),
    "client_email_and_status": TaskFilter(
        client_email="client7@example.com", status=TaskStatus.PENDING
    ),
}
BID_FILTERS = {
    "none": BidFilter(),
    "marketplace": BidFilter(marketplace="market-3"),
    "job_id": BidFilter(job_id="job-42"),
    "marketplace_and_job_id": BidFilter(marketplace="market-2", job_id="job-42"),
    "agent_id": BidFilter(agent_id="agent-7"),
    "status": BidFilter(status=BidStatus.PENDING),
}


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _create_seeded(server_url: str, name: str) -> str:
    admin = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await admin.close()
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    await migrate(url)
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            for statement in filter(str.strip, SEED.split(";")):
                await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()
    return url


async def _drop(server_url: str, name: str) -> None:
    admin = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def seeded_pg(postgres_server_url: str) -> Iterator[str]:
    """One database per module with 40,000 tasks, bids and events, ANALYZEd (seeding is slow)."""
    name = f"test_explain_{uuid.uuid4().hex[:12]}"
    url = asyncio.run(_create_seeded(postgres_server_url, name))
    try:
        yield url
    finally:
        asyncio.run(_drop(postgres_server_url, name))


async def _plan(url: str, stmt: Any) -> str:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            compiled = stmt.compile(dialect=conn.dialect)
            params = tuple(compiled.params[name] for name in compiled.positiontup)
            rows = await conn.exec_driver_sql("EXPLAIN " + str(compiled), params)
            return "\n".join(r[0] for r in rows)
    finally:
        await engine.dispose()


def _assert_index_scan(plan: str) -> None:
    assert "Seq Scan" not in plan, plan
    assert "Index" in plan, plan


@pytest.mark.parametrize("name", sorted(TASK_FILTERS))
@pytest.mark.parametrize("page", ["first", "later"])
async def test_list_tasks_uses_an_index(seeded_pg: str, name: str, page: str) -> None:
    after = AFTER if page == "later" else None
    _assert_index_scan(await _plan(seeded_pg, task_list_statement(TASK_FILTERS[name], after, 51)))


@pytest.mark.parametrize("name", sorted(BID_FILTERS))
@pytest.mark.parametrize("page", ["first", "later"])
async def test_list_bids_uses_an_index(seeded_pg: str, name: str, page: str) -> None:
    after = AFTER if page == "later" else None
    _assert_index_scan(await _plan(seeded_pg, bid_list_statement(BID_FILTERS[name], after, 51)))


async def test_list_bid_events_uses_an_index(seeded_pg: str) -> None:
    bid_id = "c4ca4238-a0b9-2382-0dcc-509a6f75849b"
    _assert_index_scan(await _plan(seeded_pg, bid_event_list_statement(bid_id, AFTER, 51)))
