"""The database kit against a real PostgreSQL: locks, conflicts, lost connections."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from marketplace_common import db_postgres
from marketplace_common.db import (
    create_engine,
    is_postgres,
    read_transaction,
    run_statement,
    run_transaction,
    write_transaction,
)
from marketplace_common.errors import ConflictError, UnavailableError
from marketplace_common.pg_admin import asyncpg_dsn
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


@pytest.fixture
async def engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(pg_url, pool_size=4, lock_timeout_ms=5000)
    async with eng.begin() as conn:
        await conn.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER)"))
        await conn.execute(text("INSERT INTO counter VALUES (1, 0), (2, 0)"))
        await conn.execute(text("CREATE TABLE item (name TEXT PRIMARY KEY)"))
    yield eng
    await eng.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> AsyncEngine:
    return engine


@pytest.fixture
async def admin(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain autocommit connection to the same database, outside the kit."""
    conn = await asyncpg.connect(asyncpg_dsn(pg_url))
    yield conn
    await conn.close()


async def _values(sessions: AsyncEngine) -> list[int]:
    async with read_transaction(sessions) as session:
        rows = await session.scalars(text("SELECT value FROM counter ORDER BY id"))
        return list(rows.all())


async def test_engine_reports_postgres(engine: AsyncEngine) -> None:
    assert is_postgres(engine)


async def test_engine_sets_application_name_and_timeouts(pg_url: str) -> None:
    eng = create_engine(pg_url, statement_timeout_ms=1234, lock_timeout_ms=567)
    try:
        async with read_transaction(eng) as session:
            assert await session.scalar(text("SHOW application_name")) == "marketplace"
            assert await session.scalar(text("SHOW statement_timeout")) == "1234ms"
            assert await session.scalar(text("SHOW lock_timeout")) == "567ms"
    finally:
        await eng.dispose()


async def test_savepoint_rolls_back_alone(sessions: AsyncEngine) -> None:
    async with write_transaction(sessions) as session:
        await session.execute(text("INSERT INTO item VALUES ('a')"))
        savepoint = await session.begin_nested()
        await session.execute(text("INSERT INTO item VALUES ('b')"))
        await savepoint.rollback()
        async with session.begin_nested():
            await session.execute(text("INSERT INTO item VALUES ('c')"))
    async with read_transaction(sessions) as session:
        names = (await session.scalars(text("SELECT name FROM item ORDER BY name"))).all()
    assert list(names) == ["a", "c"]


async def test_read_transaction_is_read_only(sessions: AsyncEngine) -> None:
    async def write_in_read() -> None:
        async with read_transaction(sessions) as session:
            await session.execute(text("INSERT INTO item VALUES ('a')"))

    with pytest.raises(sa_exc.DBAPIError) as caught:
        await write_in_read()
    assert getattr(caught.value.orig, "sqlstate", None) == "25006"


async def test_read_only_does_not_stick_to_the_pooled_connection(pg_url: str) -> None:
    eng = create_engine(pg_url, pool_size=1, max_overflow=0)
    sessions = eng
    try:
        async with read_transaction(sessions) as session:
            assert await session.scalar(text("SHOW transaction_read_only")) == "on"
        async with write_transaction(sessions) as session:
            assert await session.scalar(text("SHOW transaction_read_only")) == "off"
            await session.execute(text("CREATE TABLE written (id INTEGER)"))
    finally:
        await eng.dispose()


async def test_run_transaction_retries_a_real_deadlock(
    sessions: AsyncEngine,
) -> None:
    locked = {1: asyncio.Event(), 2: asyncio.Event()}
    calls = {1: 0, 2: 0}

    def transfer(first: int, second: int) -> Callable[[AsyncConnection], Awaitable[None]]:
        async def work(session: AsyncConnection) -> None:
            calls[first] += 1
            await session.execute(text("SET LOCAL deadlock_timeout = '50ms'"))
            bump = text("UPDATE counter SET value = value + 1 WHERE id = :id")
            await session.execute(bump, {"id": first})
            locked[first].set()
            await asyncio.wait_for(locked[second].wait(), 5)
            await session.execute(bump, {"id": second})

        return work

    async with asyncio.timeout(20):
        await asyncio.gather(
            run_transaction(sessions, transfer(1, 2), base_delay=0.05),
            run_transaction(sessions, transfer(2, 1), base_delay=0.05),
        )
    assert sorted(calls.values()) == [1, 2]  # the deadlock victim ran again
    assert await _values(sessions) == [2, 2]  # both transfers landed, once each


async def test_run_transaction_ends_in_conflict_after_the_budget(
    sessions: AsyncEngine, admin: asyncpg.Connection
) -> None:
    calls = 0

    async def lose_every_race(session: AsyncConnection) -> None:
        nonlocal calls
        calls += 1
        await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        await session.execute(text("SELECT value FROM counter WHERE id = 1"))
        # Someone else commits a change to the row after our snapshot...
        await admin.execute("UPDATE counter SET value = value + 10 WHERE id = 1")
        # ...so updating it ourselves is a real serialization failure (40001).
        await session.execute(text("UPDATE counter SET value = value + 1 WHERE id = 1"))

    with pytest.raises(ConflictError) as caught:
        await run_transaction(sessions, lose_every_race, attempts=3, base_delay=0.001)
    assert calls == 3
    assert caught.value.metadata["sqlstate"] == "40001"
    assert caught.value.retry_after is not None
    assert await _values(sessions) == [30, 0]  # none of our updates landed


async def test_lock_timeout_is_a_conflict(
    pg_url: str, admin: asyncpg.Connection, engine: AsyncEngine
) -> None:
    impatient = create_engine(pg_url, lock_timeout_ms=100)

    async def update(session: AsyncConnection) -> None:
        await session.execute(text("UPDATE counter SET value = 1 WHERE id = 1"))

    try:
        async with admin.transaction():
            await admin.execute("SELECT * FROM counter WHERE id = 1 FOR UPDATE")
            with pytest.raises(ConflictError) as caught:
                await run_transaction(impatient, update)
    finally:
        await impatient.dispose()
    assert caught.value.reason == "LOCK_TIMEOUT"


async def test_lost_connection_is_unavailable_and_the_next_transaction_works(
    sessions: AsyncEngine, admin: asyncpg.Connection
) -> None:
    calls = 0

    async def killed_midway(session: AsyncConnection) -> None:
        nonlocal calls
        calls += 1
        pid = await session.scalar(text("SELECT pg_backend_pid()"))
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        await session.execute(text("UPDATE counter SET value = 99 WHERE id = 1"))

    with pytest.raises(UnavailableError) as caught:
        await run_transaction(sessions, killed_midway)
    assert calls == 1  # never retried in-process: the caller owns the retry
    assert caught.value.retry_after is not None

    async def bump(session: AsyncConnection) -> None:
        await session.execute(text("UPDATE counter SET value = value + 1 WHERE id = 1"))

    await run_transaction(sessions, bump)
    assert await _values(sessions) == [1, 0]


async def test_pool_recovers_after_every_backend_is_terminated(
    sessions: AsyncEngine, admin: asyncpg.Connection
) -> None:
    # Warm the pool with several connections, then kill them all (as a
    # database restart would); pre-ping replaces them on checkout.
    async def hold(session: AsyncConnection) -> None:
        await session.execute(text("SELECT pg_sleep(0.05)"))

    await asyncio.gather(*(run_transaction(sessions, hold) for _ in range(3)))
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    results = await asyncio.gather(
        *(run_transaction(sessions, lambda s: s.scalar(text("SELECT 1"))) for _ in range(3))
    )
    assert results == [1, 1, 1]


async def test_a_live_pooled_connection_survives_the_checkout_ping(
    sessions: AsyncEngine,
) -> None:
    # The ping must pass on a healthy connection: a failing one would silently
    # reconnect on every checkout (correct, but a new backend per transaction).
    async def backend(session: AsyncConnection) -> int | None:
        pid: int | None = await session.scalar(text("SELECT pg_backend_pid()"))
        return pid

    first = await run_transaction(sessions, backend)
    assert [await run_transaction(sessions, backend) for _ in range(3)] == [first] * 3


async def test_refused_connection_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    eng = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres")
    try:
        with pytest.raises(UnavailableError):
            await run_transaction(eng, lambda s: s.scalar(text("SELECT 1")))
    finally:
        await eng.dispose()


@pytest.mark.slow
@pytest.mark.postgres
async def test_throwaway_cluster_starts_answers_and_stops(
    pg_cluster_starter: Callable[[str | None], AbstractContextManager[str]],
) -> None:
    try:
        cluster = pg_cluster_starter(None)
        url = await asyncio.to_thread(cluster.__enter__)
    except RuntimeError as exc:  # conftest's ClusterUnavailableError
        pytest.skip(f"no local PostgreSQL binaries: {exc}")  # fails under CI (conftest)
    try:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(cluster.__exit__, None, None, None)
    with pytest.raises(OSError):
        await asyncpg.connect(asyncpg_dsn(url), timeout=2)


async def test_only_a_connection_idle_for_a_while_is_pinged(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under load every checkout finds a connection used a moment ago: it is not
    # pinged (a round trip of every transaction); one idle longer still is.
    monkeypatch.setattr(db_postgres, "PING_AFTER_IDLE_SECONDS", 0.3)
    eng = create_engine(pg_url, pool_size=1)
    sent: list[str] = []

    def log_queries(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(lambda q: sent.append(q.query))

    event.listen(eng.sync_engine.pool, "connect", log_queries)
    sessions = eng
    try:
        for _ in range(3):
            assert await run_transaction(sessions, lambda s: s.scalar(text("SELECT 1"))) == 1
        assert "SELECT 1" not in sent  # the simple-query ping; the statement is prepared
        await asyncio.sleep(0.5)
        assert await run_transaction(sessions, lambda s: s.scalar(text("SELECT 1"))) == 1
        assert sent.count("SELECT 1") == 1
    finally:
        await eng.dispose()


async def test_a_connection_lost_since_its_last_use_is_replaced_at_begin(
    sessions: AsyncEngine, admin: asyncpg.Connection
) -> None:
    # Not pinged (used a moment ago), the dead connection fails at BEGIN, before
    # anything ran: the transaction starts over on a new one, and runs once.
    async def backend(session: AsyncConnection) -> int | None:
        pid: int | None = await session.scalar(text("SELECT pg_backend_pid()"))
        return pid

    first = await run_transaction(sessions, backend)
    await admin.execute("SELECT pg_terminate_backend($1)", first)
    runs = 0

    async def bump(session: AsyncConnection) -> int | None:
        nonlocal runs
        runs += 1
        await session.execute(text("UPDATE counter SET value = value + 1 WHERE id = 1"))
        return await backend(session)

    second = await run_transaction(sessions, bump)
    assert second != first
    assert runs == 1
    assert (await _values(sessions))[0] == 1


@pytest.mark.parametrize("fails_after_begin", [asyncio.CancelledError, RuntimeError])
async def test_a_begin_cut_short_leaves_no_transaction_on_the_pooled_connection(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, fails_after_begin: type[BaseException]
) -> None:
    # A call cancelled (its client's deadline) just after the server ran its
    # BEGIN READ ONLY must not hand the next transaction on that connection a
    # read-only (or aborted) transaction: it is rolled back on the way back to the pool.
    eng = create_engine(pg_url, pool_size=1, max_overflow=0)
    sessions = eng
    original = asyncpg.Connection.execute
    cut = False

    async def execute(self: asyncpg.Connection, query: str, *args: Any, **kw: Any) -> Any:
        nonlocal cut
        result = await original(self, query, *args, **kw)
        if cut and query.startswith("BEGIN"):
            cut = False
            raise fails_after_begin()
        return result

    monkeypatch.setattr(asyncpg.Connection, "execute", execute)
    try:
        await run_transaction(sessions, lambda s: s.scalar(text("SELECT 1")))  # warm
        cut = True
        with pytest.raises(fails_after_begin):
            async with read_transaction(sessions) as session:
                await session.scalar(text("SELECT 1"))
        assert not cut
        async with write_transaction(sessions) as session:
            assert await session.scalar(text("SHOW transaction_read_only")) == "off"
            await session.execute(text("CREATE TABLE written (id INTEGER)"))
            await session.execute(text("SELECT 1 FROM pg_class LIMIT 1 FOR UPDATE"))
    finally:
        await eng.dispose()


async def test_run_statement_is_one_round_trip_and_commits(
    sessions: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No BEGIN, no COMMIT (asyncpg sends both as simple queries through execute):
    # the statement is its own transaction, and it is committed.
    simple: list[str] = []
    original = asyncpg.Connection.execute

    async def execute(self: asyncpg.Connection, query: str, *args: Any, **kw: Any) -> Any:
        simple.append(query)
        return await original(self, query, *args, **kw)

    monkeypatch.setattr(asyncpg.Connection, "execute", execute)
    rows = await run_statement(
        sessions, text("UPDATE counter SET value = value + 5 WHERE id = 1 RETURNING value")
    )
    assert [tuple(r) for r in rows] == [(5,)]
    assert not [q for q in simple if q.lstrip().upper().startswith(("BEGIN", "COMMIT"))]
    monkeypatch.undo()
    assert (await _values(sessions))[0] == 5  # committed: another transaction sees it
    assert await run_statement(sessions, text("SELECT 1 WHERE false")) == []


async def test_run_statement_maps_a_lost_connection_to_unavailable(
    sessions: AsyncEngine, admin: asyncpg.Connection
) -> None:
    assert await run_statement(sessions, text("SELECT pg_backend_pid()"))
    with pytest.raises(UnavailableError):
        await run_statement(sessions, text("SELECT pg_terminate_backend(pg_backend_pid())"))
