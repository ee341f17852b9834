"""SubmitExecution's keys in the kit's ``idempotency_keys`` table, and migration 0007
that moves them there: a key per existing execution (SQLite and PostgreSQL), an
old request_id still answers its execution after the upgrade, and the downgrade
drops the table and nothing else."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from execution_support import S, error_details
from marketplace.execution.v1 import execution_pb2 as pb
from marketplace_common.db import create_engine
from marketplace_common.migrations import downgrade_async, upgrade_async
from marketplace_execution.domain.requests import SUBMIT_SCOPE, submit_key
from marketplace_execution.migrations import MIGRATIONS_DIR
from marketplace_execution.storage.store import SqlExecutionStore
from marketplace_execution.storage.tables import IDEMPOTENCY_KEYS, ExecutionRow
from sqlalchemy import Executable, func, insert, inspect, select, update

_0007 = importlib.import_module("marketplace_execution.migrations.versions.0007_idempotency_keys")


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend (not the one start_execution migrates)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'upgraded.db'}"
    pg: str = request.getfixturevalue("pg_url")
    return pg


async def _run(url: str, statement: Executable, params: Sequence[Any] | None = None) -> Any:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as connection:
            result = await connection.execute(statement, params)
            return result.all() if result.returns_rows else None
    finally:
        await engine.dispose()


async def _keys(url: str) -> list[Any]:
    k = IDEMPOTENCY_KEYS.c
    query = select(k.scope, k.key, k.fingerprint, k.response, k.created_at).order_by(k.key)
    return list(await _run(url, query))


async def _tables(url: str) -> set[str]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_a_submit_writes_its_key_with_the_execution_id_as_the_answer(
    url: str, start_execution: Any, fake_bids: Any
) -> None:
    bids, _ = fake_bids
    await upgrade_async(url, MIGRATIONS_DIR)
    _, stub = await start_execution(database_url=url, workers=0)
    request = pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=bids.add_task())
    execution = (await stub.SubmitExecution(request)).execution
    (key,) = await _keys(url)
    assert (key.scope, key.key) == (SUBMIT_SCOPE, request.request_id)
    assert bytes(key.response).decode() == execution.execution_id
    assert len(key.fingerprint) == 64


async def test_upgrade_from_0006_keeps_old_request_ids_answering_their_executions(
    url: str, start_execution: Any, fake_bids: Any
) -> None:
    bids, _ = fake_bids
    await upgrade_async(url, MIGRATIONS_DIR)
    _, stub = await start_execution(database_url=url, workers=0)
    requests = [
        pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=bids.add_task())
        for _ in range(3)
    ]
    created = [(await stub.SubmitExecution(r)).execution for r in requests]
    written = await _keys(url)
    assert {k.key: bytes(k.response).decode() for k in written} == {
        r.request_id: e.execution_id for r, e in zip(requests, created, strict=True)
    }

    # The previous revision: no keys table, the executions (with request_id) stay.
    await downgrade_async(url, MIGRATIONS_DIR, "0006")
    assert "idempotency_keys" not in await _tables(url)
    assert await _run(url, select(func.count()).select_from(ExecutionRow)) == [(3,)]

    await upgrade_async(url, MIGRATIONS_DIR)
    assert await _keys(url) == written  # the backfill writes what a submit writes

    # A repeat of an old request answers its execution as it is now.
    first = uuid.UUID(created[0].execution_id)
    done = update(ExecutionRow).where(ExecutionRow.execution_id == first)
    await _run(url, done.values(status="SUCCEEDED", result="a haiku"))
    again = (await stub.SubmitExecution(requests[0])).execution
    assert again.execution_id == created[0].execution_id
    assert again.status == S.EXECUTION_STATUS_SUCCEEDED
    assert again.result == "a haiku"
    assert await _run(url, select(func.count()).select_from(ExecutionRow)) == [(3,)]
    # ... and the same request_id with another request is still a reuse.
    requests[1].prompt = "something else"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitExecution(requests[1])
    assert error_details(caught.value).reason == "IDEMPOTENCY_KEY_REUSED"


async def test_backfill_gives_every_existing_execution_its_key_across_batches(url: str) -> None:
    await upgrade_async(url, MIGRATIONS_DIR, "0006")
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [
        {
            "execution_id": uuid.uuid4(),
            "task_id": uuid.uuid4(),
            "request_id": uuid.uuid4(),
            "request_fingerprint": f"{i:064x}",
            "prompt": "p",
            "model": "m",
            "max_attempts": 3,
            "status": "SUCCEEDED",
            "lease_expires_at": now,
            "created_at": now - timedelta(seconds=i),
            "updated_at": now,
        }
        for i in range(2 * _0007.BATCH + 3)
    ]
    await _run(url, insert(ExecutionRow), rows)
    await upgrade_async(url, MIGRATIONS_DIR)

    keys = {k.key: k for k in await _keys(url)}
    assert len(keys) == len(rows)
    for row in rows:
        key = keys[str(row["request_id"])]
        assert key.scope == SUBMIT_SCOPE
        assert key.fingerprint == row["request_fingerprint"]
        assert bytes(key.response).decode() == str(row["execution_id"])
        assert key.created_at == row["created_at"]

    engine = create_engine(url, pool_size=2)
    try:
        store = SqlExecutionStore(engine)
        last = rows[-1]
        request_id, fingerprint = last["request_id"], last["request_fingerprint"]
        assert isinstance(request_id, uuid.UUID)
        assert isinstance(fingerprint, str)
        found = await store.replay(submit_key(request_id, fingerprint))
        assert found is not None
        assert found.execution_id == last["execution_id"]
        assert await store.replay(submit_key(uuid.uuid4(), "0" * 64)) is None
    finally:
        await engine.dispose()
