"""ListExecutions filters each caller's own executions in SQL, on an index (PostgreSQL EXPLAIN)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from marketplace_common.db import create_engine
from marketplace_common.migrations import upgrade_async
from marketplace_common.paging import PageCursor
from marketplace_common.pg_admin import create_database, drop_database
from marketplace_execution.domain.access import OwnerScope
from marketplace_execution.domain.models import ExecutionStatus
from marketplace_execution.migrations import MIGRATIONS_DIR
from marketplace_execution.storage.store import list_statement

# 40,000 executions of 500 clients, 500 agents and 50 submitting services: a caller's
# own rows are rare, so without an owner index the planner would scan created_at.
SEED = """
INSERT INTO executions (execution_id, task_id, request_id, request_fingerprint, prompt, model,
                        max_attempts, status, cancel_requested, lease_expires_at, created_at,
                        updated_at, client_email, agent_id, submitted_by)
SELECT md5('e' || i)::uuid, md5('t' || i)::uuid, md5('r' || i)::uuid, repeat('f', 64), 'p',
       'm', 3, 'SUCCEEDED', false, now(), now() - i * interval '1 minute', now(),
       'client' || (i % 500) || '@example.com', 'agent-' || (i % 500),
       'service:s' || (i % 50)
FROM generate_series(1, 40000) AS i;
ANALYZE;
"""

AFTER = PageCursor(datetime.now(UTC) - timedelta(days=3), uuid.UUID(int=2**127))
SCOPES: dict[str, tuple[OwnerScope, str]] = {
    "client": (OwnerScope(client_email="client7@example.com"), "ix_executions_client_created"),
    "agent": (OwnerScope(agent_id="agent-7"), "ix_executions_agent_created"),
    "service": (OwnerScope(submitted_by="service:s7"), "ix_executions_submitter_created"),
}


async def _create_seeded(server_url: str, name: str) -> str:
    url = await create_database(server_url, name)
    await upgrade_async(url, MIGRATIONS_DIR)
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            for statement in filter(str.strip, SEED.split(";")):
                await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()
    return url


@pytest.fixture(scope="module")
def seeded_pg(postgres_server_url: str) -> Iterator[str]:
    name = f"test_exec_explain_{uuid.uuid4().hex[:12]}"
    url = asyncio.run(_create_seeded(postgres_server_url, name))
    try:
        yield url
    finally:
        asyncio.run(drop_database(postgres_server_url, name))


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


async def _scans(url: str, stmt: Any) -> list[tuple[str, str | None]]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            compiled = stmt.compile(dialect=conn.dialect)
            params = tuple(compiled.params[name] for name in compiled.positiontup)
            rows = await conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled), params)
            document = rows.scalar_one()
            if isinstance(document, str):
                document = json.loads(document)
            nodes = _nodes(document[0]["Plan"])
            return [
                (n["Node Type"], n.get("Index Name")) for n in nodes if "Scan" in n["Node Type"]
            ]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("scope", sorted(SCOPES))
@pytest.mark.parametrize("page", ["first", "later"])
async def test_list_my_executions_runs_on_the_owner_index(
    seeded_pg: str, scope: str, page: str
) -> None:
    owner, index = SCOPES[scope]
    after = AFTER if page == "later" else None
    scans = await _scans(seeded_pg, list_statement(None, None, after, 51, owner))
    assert all(kind != "Seq Scan" for kind, _ in scans), scans
    assert index in {name for _, name in scans}, f"expected a scan on {index}, got {scans}"


@pytest.mark.parametrize("scope", sorted(SCOPES))
async def test_list_my_executions_with_a_status_never_scans_the_table(
    seeded_pg: str, scope: str
) -> None:
    owner, _index = SCOPES[scope]
    stmt = list_statement(None, ExecutionStatus.FAILED, None, 51, owner)
    scans = await _scans(seeded_pg, stmt)
    assert scans
    assert all(kind != "Seq Scan" for kind, _ in scans), scans
