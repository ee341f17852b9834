"""The database kit on SQLite (the embedded default) and its error mapping."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from marketplace_common.db import (
    create_engine,
    dialect_name,
    is_postgres,
    read_transaction,
    run_transaction,
    translate_db_error,
    write_transaction,
)
from marketplace_common.errors import (
    ConflictError,
    DeadlineExceededError,
    NotFoundError,
    UnavailableError,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


@pytest.fixture
async def engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(sqlite_url)
    async with eng.begin() as conn:
        await conn.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER)"))
        await conn.execute(text("INSERT INTO counter VALUES (1, 0)"))
        await conn.execute(text("CREATE TABLE item (name TEXT PRIMARY KEY)"))
        await conn.execute(
            text("CREATE TABLE child (id INTEGER PRIMARY KEY, parent TEXT REFERENCES item(name))")
        )
    yield eng
    await eng.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> AsyncEngine:
    return engine


def _db_path(engine: AsyncEngine) -> str:
    path = engine.url.database
    assert path is not None
    return path


async def _counter(session: AsyncConnection) -> int:
    value = await session.scalar(text("SELECT value FROM counter WHERE id = 1"))
    assert isinstance(value, int)
    return value


async def _names(sessions: AsyncEngine) -> list[str]:
    async with read_transaction(sessions) as session:
        return list((await session.scalars(text("SELECT name FROM item ORDER BY name"))).all())


async def test_engine_reports_sqlite_dialect(engine: AsyncEngine) -> None:
    assert dialect_name(engine) == "sqlite"
    assert not is_postgres(engine)


async def test_engine_creates_missing_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "db.sqlite"
    eng = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with eng.connect() as conn:
            await conn.execute(text("SELECT 1"))
    finally:
        await eng.dispose()
    assert path.exists()


async def test_plain_sqlite_url_gets_the_async_driver(tmp_path: Path) -> None:
    eng = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        assert eng.url.drivername == "sqlite+aiosqlite"
    finally:
        await eng.dispose()


def test_sync_driver_is_refused() -> None:
    with pytest.raises(ValueError, match="asyncpg"):
        create_engine("postgresql+psycopg2://u@localhost/db")


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        create_engine("mysql+aiomysql://u@localhost/db")


async def test_connections_use_wal_and_enforce_foreign_keys(
    sessions: AsyncEngine,
) -> None:
    async with read_transaction(sessions) as session:
        assert await session.scalar(text("PRAGMA journal_mode")) == "wal"
        assert await session.scalar(text("PRAGMA foreign_keys")) == 1
    with pytest.raises(sa_exc.IntegrityError):
        async with write_transaction(sessions) as session:
            await session.execute(text("INSERT INTO child VALUES (1, 'missing')"))


async def test_write_transaction_holds_the_write_lock_from_begin(
    sessions: AsyncEngine, engine: AsyncEngine
) -> None:
    other = sqlite3.connect(_db_path(engine), timeout=0, isolation_level=None)
    try:
        async with write_transaction(sessions):
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
    finally:
        other.close()


async def test_read_transaction_takes_no_write_lock(
    sessions: AsyncEngine, engine: AsyncEngine
) -> None:
    other = sqlite3.connect(_db_path(engine), timeout=0, isolation_level=None)
    try:
        async with read_transaction(sessions) as session:
            await _counter(session)
            other.execute("BEGIN IMMEDIATE")
            other.execute("UPDATE counter SET value = 5")
            other.execute("COMMIT")
    finally:
        other.close()


async def test_concurrent_write_transactions_serialise(
    sessions: AsyncEngine,
) -> None:
    # Read-modify-write with a pause in the middle: with a deferred BEGIN the
    # second writer could not upgrade its read lock ("database is locked");
    # with BEGIN IMMEDIATE it waits its turn and no increment is lost.
    async def increment() -> None:
        async with write_transaction(sessions) as session:
            value = await _counter(session)
            await asyncio.sleep(0.2)
            await session.execute(text("UPDATE counter SET value = :v"), {"v": value + 1})

    await asyncio.gather(increment(), increment(), increment())
    async with read_transaction(sessions) as session:
        assert await _counter(session) == 3


async def test_read_during_open_write_sees_last_committed_value(
    sessions: AsyncEngine,
) -> None:
    async with write_transaction(sessions) as writer:
        await writer.execute(text("UPDATE counter SET value = 42"))
        async with asyncio.timeout(2), read_transaction(sessions) as reader:
            assert await _counter(reader) == 0
    async with read_transaction(sessions) as reader:
        assert await _counter(reader) == 42


async def test_savepoint_rolls_back_alone(sessions: AsyncEngine) -> None:
    async with write_transaction(sessions) as session:
        await session.execute(text("INSERT INTO item VALUES ('a')"))
        savepoint = await session.begin_nested()
        await session.execute(text("INSERT INTO item VALUES ('b')"))
        await savepoint.rollback()
        async with session.begin_nested():
            await session.execute(text("INSERT INTO item VALUES ('c')"))
    assert await _names(sessions) == ["a", "c"]


async def test_write_transaction_rolls_back_on_error(
    sessions: AsyncEngine,
) -> None:
    async def insert_then_fail() -> None:
        async with write_transaction(sessions) as session:
            await session.execute(text("INSERT INTO item VALUES ('a')"))
            raise NotFoundError("nope")

    with pytest.raises(NotFoundError):
        await insert_then_fail()
    assert await _names(sessions) == []


async def test_run_transaction_commits_and_returns_the_result(
    sessions: AsyncEngine,
) -> None:
    async def work(session: AsyncConnection) -> str:
        await session.execute(text("INSERT INTO item VALUES ('a')"))
        return "done"

    assert await run_transaction(sessions, work) == "done"
    assert await _names(sessions) == ["a"]


async def test_run_transaction_passes_domain_errors_through_and_rolls_back(
    sessions: AsyncEngine,
) -> None:
    error = NotFoundError("no such bid", reason="BID_NOT_FOUND")
    calls = 0

    async def work(session: AsyncConnection) -> None:
        nonlocal calls
        calls += 1
        await session.execute(text("INSERT INTO item VALUES ('a')"))
        raise error

    with pytest.raises(NotFoundError) as caught:
        await run_transaction(sessions, work)
    assert caught.value is error
    assert calls == 1
    assert await _names(sessions) == []


async def test_run_transaction_gives_conflict_when_sqlite_stays_locked(
    sqlite_url: str, engine: AsyncEngine
) -> None:
    impatient = create_engine(sqlite_url, sqlite_busy_timeout_ms=20)
    other = sqlite3.connect(_db_path(engine), timeout=0, isolation_level=None)
    calls = 0

    async def work(session: AsyncConnection) -> None:
        nonlocal calls
        calls += 1

    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(ConflictError) as caught:
            await run_transaction(impatient, work, attempts=3)
    finally:
        other.close()
        await impatient.dispose()
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 0
    assert calls == 0  # BEGIN IMMEDIATE itself waited and gave up, three times


async def test_run_transaction_retries_until_sqlite_lock_is_released(
    sqlite_url: str, engine: AsyncEngine
) -> None:
    impatient = create_engine(sqlite_url, sqlite_busy_timeout_ms=20)
    other = sqlite3.connect(_db_path(engine), timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")

    async def release_soon() -> None:
        await asyncio.sleep(0.15)
        other.execute("COMMIT")

    async def work(session: AsyncConnection) -> int:
        return await _counter(session)

    try:
        release = asyncio.create_task(release_soon())
        value = await run_transaction(impatient, work, attempts=20, base_delay=0.05, max_delay=0.05)
        await release
    finally:
        other.close()
        await impatient.dispose()
    assert value == 0


def test_run_transaction_rejects_zero_attempts() -> None:
    async def work(session: AsyncConnection) -> None:
        return None

    with pytest.raises(ValueError, match="attempts"):
        asyncio.run(run_transaction(create_engine("sqlite+aiosqlite://"), work, attempts=0))


# --- error mapping ------------------------------------------------------------


class _FakePgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"server said something about SELECT secret ({sqlstate})")
        self.sqlstate = sqlstate


def _wrapped(sqlstate: str) -> sa_exc.DBAPIError:
    return sa_exc.DBAPIError("SELECT secret FROM t", {}, _FakePgError(sqlstate))


@pytest.mark.parametrize("sqlstate", ["40001", "40P01", "55P03"])
def test_conflict_states_map_to_conflict_error(sqlstate: str) -> None:
    error = translate_db_error(_wrapped(sqlstate))
    assert isinstance(error, ConflictError)
    assert error.retry_after is not None
    assert "SELECT" not in error.message
    assert error.metadata["sqlstate"] == sqlstate


@pytest.mark.parametrize("sqlstate", ["57P01", "57P03", "08006", "08001", "53300"])
def test_connection_states_map_to_unavailable_error(sqlstate: str) -> None:
    error = translate_db_error(_wrapped(sqlstate))
    assert isinstance(error, UnavailableError)
    assert error.retry_after is not None
    assert "SELECT" not in error.message


def test_statement_timeout_maps_to_deadline_exceeded() -> None:
    assert isinstance(translate_db_error(_wrapped("57014")), DeadlineExceededError)


def test_refused_connection_maps_to_unavailable_error() -> None:
    assert isinstance(translate_db_error(ConnectionRefusedError(111, "refused")), UnavailableError)


def test_invalidated_connection_maps_to_unavailable_error() -> None:
    exc = sa_exc.DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)
    assert isinstance(translate_db_error(exc), UnavailableError)


def test_sqlite_busy_maps_to_conflict_error() -> None:
    exc = sa_exc.OperationalError("BEGIN", {}, sqlite3.OperationalError("database is locked"))
    assert isinstance(translate_db_error(exc), ConflictError)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("x"),
        _wrapped("23505"),
        NotFoundError("missing"),
    ],
)
def test_other_errors_are_not_mapped(exc: Exception) -> None:
    assert translate_db_error(exc) is None


# --- the in-process write gate (SQLite) -----------------------------------


async def test_many_concurrent_writers_on_a_small_pool_all_commit(
    sqlite_url: str, engine: AsyncEngine
) -> None:
    # 100 writers, 4 connections, a 20 ms busy timeout and a 0.5 s pool timeout:
    # racing for BEGIN IMMEDIATE they would fail on busy and checkout timeouts;
    # queued in the process before checkout, each commits on its first try.
    small = create_engine(
        sqlite_url, pool_size=4, max_overflow=0, pool_timeout=0.5, sqlite_busy_timeout_ms=20
    )

    async def increment(session: AsyncConnection) -> None:
        value = await _counter(session)
        await asyncio.sleep(0.01)
        await session.execute(text("UPDATE counter SET value = :v"), {"v": value + 1})

    try:
        async with asyncio.timeout(10):
            await asyncio.gather(
                *(run_transaction(small, increment, attempts=1) for _ in range(100))
            )
        async with read_transaction(small) as session:
            assert await _counter(session) == 100
    finally:
        await small.dispose()


async def test_cancelled_write_waiter_does_not_keep_the_write_gate(
    sessions: AsyncEngine,
) -> None:
    release = asyncio.Event()
    holding = asyncio.Event()
    entered: list[str] = []

    async def hold() -> None:
        async with write_transaction(sessions):
            holding.set()
            await release.wait()

    async def wait_then_write() -> None:
        async with write_transaction(sessions):
            entered.append("waiter")

    holder = asyncio.create_task(hold())
    await holding.wait()
    waiter = asyncio.create_task(wait_then_write())
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    async with asyncio.timeout(1), write_transaction(sessions) as session:
        await session.execute(text("INSERT INTO item VALUES ('after')"))
    assert entered == []
    assert await _names(sessions) == ["after"]


async def test_read_transaction_does_not_wait_for_the_write_gate(
    sessions: AsyncEngine,
) -> None:
    release = asyncio.Event()
    holding = asyncio.Event()

    async def hold() -> None:
        async with write_transaction(sessions):
            holding.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await holding.wait()
    try:

        async def read_elsewhere() -> int:
            async with read_transaction(sessions) as session:
                return await _counter(session)

        async with asyncio.timeout(1):
            assert await asyncio.create_task(read_elsewhere()) == 0
    finally:
        release.set()
        await holder


async def test_nested_write_transaction_in_one_task_does_not_wait_for_its_own_gate(
    sqlite_url: str, engine: AsyncEngine
) -> None:
    impatient = create_engine(sqlite_url, sqlite_busy_timeout_ms=20)
    sessions = impatient

    async def nothing(session: AsyncConnection) -> None:
        return None

    try:
        async with asyncio.timeout(2), write_transaction(sessions):
            # SQLite refuses a second writer (busy): an error, never a hang on the gate.
            with pytest.raises(ConflictError):
                await run_transaction(sessions, nothing, attempts=1)
    finally:
        await impatient.dispose()


async def test_write_gate_wait_is_bounded(sqlite_url: str, engine: AsyncEngine) -> None:
    quick = create_engine(sqlite_url, sqlite_write_wait_seconds=0.1)
    sessions = quick
    release = asyncio.Event()
    holding = asyncio.Event()

    async def hold() -> None:
        async with write_transaction(sessions):
            holding.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await holding.wait()
    try:
        with pytest.raises(ConflictError) as caught:
            async with write_transaction(sessions):
                pass
        assert caught.value.retry_after is not None
    finally:
        release.set()
        await holder
        await quick.dispose()
