"""SQLite engine setup and the in-process write queue.

SQLite runs through aiosqlite (``sqlite+aiosqlite:///path/to/file.db``), the
embedded default; :func:`marketplace_common.db.create_engine` hands SQLite
URLs to :func:`sqlite_engine`. Every connection runs in WAL mode with a busy
timeout and foreign keys on. pysqlite's own transaction handling is switched
off and we emit ``BEGIN`` ourselves: write transactions (connections carrying
the :data:`WRITE_OPTION` execution option) start with ``BEGIN IMMEDIATE``
(they take the single write lock up front, so concurrent writers queue on the
busy timeout instead of failing with "database is locked" when a read lock
cannot be upgraded), read transactions with a deferred ``BEGIN`` (readers
never block writers in WAL mode). Savepoints work inside both. SQLite has no
row locks: ``SELECT ... FOR UPDATE`` renders without the ``FOR UPDATE``
there, which is still correct because write transactions hold the database's
only write lock from their first statement.

Inside one process, write transactions also queue on a per-engine
:class:`asyncio.Lock` taken *before* a connection is checked out (see
:class:`_WriteGate` and :func:`write_gate`): SQLite admits one writer anyway,
and many writers racing for ``BEGIN IMMEDIATE`` would each hold a pooled
connection while sleeping in SQLite's busy handler (retries at growing
intervals), which wastes the lock's idle gaps and runs the pool dry. Queued in
the process, the next writer starts the moment the last one commits, and a
waiting writer holds no connection. Read transactions never take the gate.
``busy_timeout`` still covers writers in other processes.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from marketplace_common.db_errors import CONFLICT_RETRY_AFTER
from marketplace_common.errors import ConflictError

__all__ = ["WRITE_OPTION", "sqlite_engine", "write_gate"]

#: Connection execution option marking a write transaction (``BEGIN IMMEDIATE`` on SQLite).
WRITE_OPTION = "marketplace_write"


def _is_memory_sqlite(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def sqlite_engine(
    url: URL,
    *,
    echo: bool,
    pool_size: int,
    max_overflow: int,
    pool_timeout: float,
    busy_timeout_ms: int,
    write_wait_seconds: float,
) -> AsyncEngine:
    """An aiosqlite engine with the pragmas, the BEGIN hook and a write gate (see module doc)."""
    kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
    if _is_memory_sqlite(url):
        # One shared StaticPool connection: pool sizing does not apply.
        pass
    else:
        database = url.database or ""
        if not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs.update(pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout)
    kwargs["connect_args"] = {"timeout": busy_timeout_ms / 1000}
    engine = create_async_engine(url, **kwargs)
    pragmas = (
        f"PRAGMA busy_timeout = {int(busy_timeout_ms)}",
        "PRAGMA journal_mode = WAL",
        "PRAGMA synchronous = NORMAL",
        "PRAGMA foreign_keys = ON",
    )

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite: it would otherwise
        # BEGIN only before DML, breaking SELECT isolation and SAVEPOINT.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()

    def on_begin(conn: Connection) -> None:
        write = bool(conn.get_execution_options().get(WRITE_OPTION))
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "begin", on_begin)
    _WRITE_GATES[engine.sync_engine] = _WriteGate(write_wait_seconds)
    return engine


class _WriteGate:
    """One SQLite engine's in-process queue for the database's single write lock.

    Taken before a write transaction checks out its connection and released
    after it commits or rolls back. Re-entrant for the task that holds it: a
    write transaction opened inside another one in the same task does not
    wait for itself (SQLite refuses that second writer with "database is
    locked" after the busy timeout, as it always did). A child task of the
    holder is a different writer and queues. One lock per event loop, since
    an engine may outlive a test's loop. A cancelled waiter leaves the queue
    (``asyncio.Lock`` handles that); the wait is bounded by ``wait_seconds``.
    """

    def __init__(self, wait_seconds: float) -> None:
        self._wait_seconds = wait_seconds
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._owner: asyncio.Task[Any] | None = None

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if task is not None and task is self._owner:
            yield  # nested in this task's own write transaction
            return
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._wait_seconds):
                await lock.acquire()
        except TimeoutError:
            raise ConflictError(
                "the database is busy with other writers; retry the call",
                retry_after=CONFLICT_RETRY_AFTER,
                metadata={"waited_seconds": f"{time.monotonic() - started:.3f}"},
            ) from None
        self._owner = task
        try:
            yield
        finally:
            self._owner = None
            lock.release()


_WRITE_GATES: weakref.WeakKeyDictionary[Engine, _WriteGate] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def write_gate(engine: AsyncEngine) -> AsyncIterator[None]:
    """The SQLite engine's write gate, or nothing (PostgreSQL has row locks)."""
    gate = _WRITE_GATES.get(engine.sync_engine)
    if gate is None:
        yield
        return
    async with gate.hold():
        yield
