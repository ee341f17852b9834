"""The schema: models and migrations agree on both databases, downgrade works,
and every List filter runs on an index on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from bids_support import migrate
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
from marketplace_common.paging import PageCursor
from marketplace_common.pg_admin import create_database, drop_database
from sqlalchemy import Connection, inspect

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

# 40,000 rows each. The filtered statuses are rare (1 %) and there are 50
# marketplaces, so the index made for a filter is the planner's only good
# plan: without it, a scan of the created_at index plus a filter would do.
SEED = """
INSERT INTO bids (bid_id, marketplace, job_id, agent_id, amount_currency, amount_units,
                  amount_nanos, proposal, status, created_at, updated_at)
SELECT md5('b' || i)::uuid::text, 'market-' || (i % 50), 'job-' || (i / 8),
       'agent-' || (i % 500), 'EUR', 100, 0, 'p',
       CASE WHEN i % 100 = 0 THEN 'PENDING'
            ELSE (ARRAY['WITHDRAWN', 'ACCEPTED', 'REJECTED'])[1 + i % 3] END,
       now() - i * interval '1 minute', now()
FROM generate_series(1, 40000) AS i;
INSERT INTO tasks (task_id, client_email, title, description, budget_currency, budget_units,
                   budget_nanos, status, created_at, updated_at)
SELECT md5('t' || i)::uuid::text, 'client' || (i % 500) || '@example.com', 't', 'd', 'EUR',
       100, 0,
       CASE WHEN i % 100 = 0 THEN 'FAILED'
            ELSE (ARRAY['PENDING', 'PROCESSING', 'COMPLETED'])[1 + i % 3] END,
       now() - i * interval '1 minute', now()
FROM generate_series(1, 40000) AS i;
INSERT INTO bid_events (event_id, bid_id, previous_status, new_status, reason, actor, created_at)
SELECT md5('e' || i)::uuid::text, md5('b' || i)::uuid::text, 'PENDING', 'WITHDRAWN', '', 'a',
       now() - i * interval '1 minute'
FROM generate_series(1, 40000) AS i;
ANALYZE;
"""

NOW = datetime.now(UTC)
AFTER = PageCursor(NOW - timedelta(days=3), uuid.UUID("8" * 32))

# Each List filter -> (the filter, the index it must run on).
TASK_FILTERS: dict[str, tuple[TaskFilter, str]] = {
    "none": (TaskFilter(), "ix_tasks_created_at"),
    "client_email": (
        TaskFilter(client_email="client7@example.com"),
        "ix_tasks_client_email_created_at",
    ),
    "status": (TaskFilter(status=TaskStatus.FAILED), "ix_tasks_status_created_at"),
    "created_range": (
        TaskFilter(created_after=NOW - timedelta(days=2), created_before=NOW - timedelta(days=1)),
        "ix_tasks_created_at",
    ),
    "client_email_and_status": (
        TaskFilter(client_email="client7@example.com", status=TaskStatus.PENDING),
        "ix_tasks_client_email_created_at",
    ),
}
BID_FILTERS: dict[str, tuple[BidFilter, str]] = {
    "none": (BidFilter(), "ix_bids_created_at"),
    "marketplace": (BidFilter(marketplace="market-3"), "ix_bids_marketplace_created_at"),
    "job_id": (BidFilter(job_id="job-42"), "ix_bids_job_id_marketplace_created_at"),
    "marketplace_and_job_id": (
        BidFilter(marketplace="market-2", job_id="job-42"),
        "ix_bids_job_id_marketplace_created_at",
    ),
    "agent_id": (BidFilter(agent_id="agent-7"), "ix_bids_agent_id_created_at"),
    "status": (BidFilter(status=BidStatus.PENDING), "ix_bids_status_created_at"),
}
EVENTS_INDEX = "ix_bid_events_bid_id_created_at"


async def _create_seeded(server_url: str, name: str) -> str:
    url = await create_database(server_url, name)
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
    await drop_database(server_url, name)


@pytest.fixture(scope="module")
def seeded_pg(postgres_server_url: str) -> Iterator[str]:
    """One database per module with 40,000 tasks, bids and events, ANALYZEd (seeding is slow)."""
    name = f"test_explain_{uuid.uuid4().hex[:12]}"
    url = asyncio.run(_create_seeded(postgres_server_url, name))
    try:
        yield url
    finally:
        asyncio.run(_drop(postgres_server_url, name))


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


async def _plan(url: str, stmt: Any) -> list[dict[str, Any]]:
    """Every node of the statement's EXPLAIN (FORMAT JSON) plan."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            compiled = stmt.compile(dialect=conn.dialect)
            params = tuple(compiled.params[name] for name in compiled.positiontup)
            rows = await conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled), params)
            document = rows.scalar_one()
            if isinstance(document, str):
                document = json.loads(document)
            return list(_nodes(document[0]["Plan"]))
    finally:
        await engine.dispose()


def _assert_runs_on(nodes: list[dict[str, Any]], index: str) -> None:
    scans = [(n["Node Type"], n.get("Index Name")) for n in nodes if "Scan" in n["Node Type"]]
    assert all(kind != "Seq Scan" for kind, _ in scans), scans
    assert index in {name for _, name in scans}, f"expected a scan on {index}, got {scans}"


@pytest.mark.parametrize("name", sorted(TASK_FILTERS))
@pytest.mark.parametrize("page", ["first", "later"])
async def test_list_tasks_uses_its_index(seeded_pg: str, name: str, page: str) -> None:
    after = AFTER if page == "later" else None
    filters, index = TASK_FILTERS[name]
    _assert_runs_on(await _plan(seeded_pg, task_list_statement(filters, after, 51)), index)


@pytest.mark.parametrize("name", sorted(BID_FILTERS))
@pytest.mark.parametrize("page", ["first", "later"])
async def test_list_bids_uses_its_index(seeded_pg: str, name: str, page: str) -> None:
    after = AFTER if page == "later" else None
    filters, index = BID_FILTERS[name]
    _assert_runs_on(await _plan(seeded_pg, bid_list_statement(filters, after, 51)), index)


@pytest.mark.parametrize("page", ["first", "later"])
async def test_list_bid_events_uses_its_index(seeded_pg: str, page: str) -> None:
    bid_id = "c4ca4238-a0b9-2382-0dcc-509a6f75849b"
    after = AFTER if page == "later" else None
    _assert_runs_on(
        await _plan(seeded_pg, bid_event_list_statement(bid_id, after, 51)), EVENTS_INDEX
    )
