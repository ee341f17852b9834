"""The caller's deadline reaches PostgreSQL: each transaction of an RPC with a deadline runs
with a local statement_timeout of the time left, so a lock wait (or a slow statement) of a
request whose caller gave up ends with it, instead of running on for lock_timeout."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from bids_support import migrate
from marketplace_bids.domain.ports import Repositories
from marketplace_bids.storage.unit_of_work import SqlRepositories, SqlUnitOfWork
from marketplace_common.db import create_engine
from marketplace_common.errors import DeadlineExceededError
from marketplace_common.rpc_context import CallInfo, reset_current_call, set_current_call
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.postgres

TASK_ID = "6f1c1f3e-0000-4000-8000-000000000001"


@contextmanager
def serving_call(deadline_in: float | None) -> Iterator[None]:
    """As inside an RPC whose caller set a deadline ``deadline_in`` seconds from now."""
    deadline = None if deadline_in is None else time.monotonic() + deadline_in
    token = set_current_call(
        CallInfo("/marketplace.bids.v1.BidService/GetTask", "unary", "r", deadline=deadline)
    )
    try:
        yield
    finally:
        reset_current_call(token)


@pytest.fixture
async def engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    await migrate(pg_url)
    engine = create_engine(pg_url, pool_size=2)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _setting(repos: Repositories, name: str) -> str:
    assert isinstance(repos, SqlRepositories)
    result = await repos._conn.execute(text(f"SELECT current_setting('{name}')"))
    return str(result.scalar_one())


@pytest.mark.parametrize("write", [True, False], ids=["write", "read"])
async def test_statement_timeout_is_the_time_left(engine: AsyncEngine, write: bool) -> None:
    uow = SqlUnitOfWork(engine, lock_timeout_ms=5000)

    async def settings(repos: Repositories) -> tuple[str, str]:
        return await _setting(repos, "statement_timeout"), await _setting(repos, "lock_timeout")

    with serving_call(20.0):
        statement, lock = await uow.run(settings, write=write)
    assert statement.endswith("s")
    seconds = (
        float(statement.removesuffix("ms")) / 1000
        if statement.endswith("ms")
        else float(statement[:-1])
    )
    assert 15 < seconds <= 20
    assert lock == ("5s" if write else "0")


async def test_without_a_deadline_there_is_no_statement_timeout(engine: AsyncEngine) -> None:
    uow = SqlUnitOfWork(engine)
    with serving_call(None):
        assert await uow.run(lambda repos: _setting(repos, "statement_timeout")) == "0"
    assert await uow.run(lambda repos: _setting(repos, "statement_timeout")) == "0"


async def test_timeout_ends_with_the_transaction(engine: AsyncEngine) -> None:
    uow = SqlUnitOfWork(engine)
    with serving_call(20.0):
        await uow.run(lambda repos: _setting(repos, "statement_timeout"))
    async with engine.connect() as conn:  # the pooled connection, back without it
        assert (await conn.execute(text("SHOW statement_timeout"))).scalar_one() == "0"


async def test_lock_wait_ends_at_the_callers_deadline(engine: AsyncEngine, pg_url: str) -> None:
    dsn = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    holder = await asyncpg.connect(dsn)
    await holder.execute(
        "INSERT INTO tasks (task_id, client_email, title, description, budget_currency, "
        "budget_units, budget_nanos, status, created_at, updated_at) "
        "VALUES ($1, 'a@example.com', 't', 'd', 'EUR', 1, 0, 'PENDING', now(), now())",
        TASK_ID,
    )
    uow = SqlUnitOfWork(engine, lock_timeout_ms=30_000)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM tasks WHERE task_id = $1 FOR UPDATE", TASK_ID)
        started = time.monotonic()
        with serving_call(0.5), pytest.raises(DeadlineExceededError):
            await uow.run(lambda repos: repos.tasks.get(TASK_ID, lock=True))
        took = time.monotonic() - started
        await tx.rollback()
    finally:
        await holder.close()
    assert 0.3 < took < 3, took


@pytest.mark.parametrize("write", [True, False], ids=["write", "read"])
async def test_timeouts_ride_on_the_begin(pg_url: str, write: bool) -> None:
    # SET LOCAL goes in the BEGIN's own message: no round trip of its own.
    await migrate(pg_url)
    engine = create_engine(pg_url, pool_size=1)
    sent: list[str] = []

    def log_queries(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(lambda q: sent.append(q.query))

    event.listen(engine.sync_engine.pool, "connect", log_queries)
    uow = SqlUnitOfWork(engine, lock_timeout_ms=4000)
    try:
        with serving_call(20.0):
            statement, lock = await uow.run(
                lambda repos: _settings(repos, "statement_timeout", "lock_timeout"), write=write
            )
    finally:
        await engine.dispose()
    begins = [q for q in sent if q.startswith("BEGIN")]
    assert len(begins) == 1, sent
    assert "SET LOCAL statement_timeout = " in begins[0]
    assert ("SET LOCAL lock_timeout = 4000;" in begins[0]) is write
    assert ("READ ONLY" in begins[0]) is not write
    assert statement.endswith("s")
    assert lock == ("4s" if write else "0")


async def _settings(repos: Repositories, *names: str) -> tuple[str, ...]:
    return tuple([await _setting(repos, name) for name in names])
