"""Database kit: engines, sessions and the one-transaction-per-RPC helper.

Two backends:

* PostgreSQL through asyncpg (``postgresql+asyncpg://user@host:5432/db``):
  pooled connections are pinged on checkout (one round trip, see
  :func:`_ping_on_checkout`), so after a database restart the first checkout
  notices the dead connection, the pool drops every connection of that
  generation, and the service recovers without a restart. A connection lost
  in the middle of a transaction becomes
  :class:`~marketplace_common.errors.UnavailableError`, never INTERNAL.
* SQLite through aiosqlite (``sqlite+aiosqlite:///path/to/file.db``), the
  embedded default. Every connection runs in WAL mode with a busy timeout and
  foreign keys on. pysqlite's own transaction handling is switched off and we
  emit ``BEGIN`` ourselves: write transactions start with ``BEGIN IMMEDIATE``
  (they take the single write lock up front, so concurrent writers queue on
  the busy timeout instead of failing with "database is locked" when a read
  lock cannot be upgraded), read transactions with a deferred ``BEGIN``
  (readers never block writers in WAL mode). Savepoints work inside both.
  SQLite has no row locks: ``SELECT ... FOR UPDATE`` renders without the
  ``FOR UPDATE`` there, which is still correct because write transactions
  hold the database's only write lock from their first statement.
  Inside one process, write transactions also queue on a per-engine
  :class:`asyncio.Lock` taken *before* a connection is checked out (see
  :class:`_WriteGate`): SQLite admits one writer anyway, and many writers
  racing for ``BEGIN IMMEDIATE`` would each hold a pooled connection while
  sleeping in SQLite's busy handler (retries at growing intervals), which
  wastes the lock's idle gaps and runs the pool dry. Queued in the process,
  the next writer starts the moment the last one commits, and a waiting
  writer holds no connection. Read transactions never take the gate.
  ``busy_timeout`` still covers writers in other processes.

Open a transaction with :func:`write_transaction` / :func:`read_transaction`
(no retries), or run a whole RPC's work with :func:`run_transaction`, which
retries serialization failures and deadlocks and maps database trouble to the
error taxonomy.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import structlog
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util import await_only

from marketplace_common.errors import (
    AgentError,
    ConflictError,
    DeadlineExceededError,
    UnavailableError,
)

__all__ = [
    "WRITE_OPTION",
    "create_engine",
    "dialect_name",
    "is_postgres",
    "make_sessionmaker",
    "read_transaction",
    "run_transaction",
    "translate_db_error",
    "write_transaction",
]

T = TypeVar("T")

#: Connection execution option marking a write transaction (``BEGIN IMMEDIATE`` on SQLite).
WRITE_OPTION = "marketplace_write"

#: Seconds a client should wait after a conflict / an outage (RetryInfo).
CONFLICT_RETRY_AFTER = 0.05
UNAVAILABLE_RETRY_AFTER = 1.0

_log = structlog.get_logger(__name__)


# --- engines -------------------------------------------------------------


def create_engine(
    url: str | URL,
    *,
    echo: bool = False,
    pool_size: int = 10,
    max_overflow: int = 10,
    pool_timeout: float = 5.0,
    statement_timeout_ms: int | None = None,
    lock_timeout_ms: int | None = None,
    application_name: str = "marketplace",
    connect_timeout: float = 5.0,
    sqlite_busy_timeout_ms: int = 5000,
    sqlite_write_wait_seconds: float = 30.0,
) -> AsyncEngine:
    """Create an async engine for a PostgreSQL (asyncpg) or SQLite (aiosqlite) URL.

    A URL without a driver (``postgresql://``, ``sqlite:///``) gets the async
    one. Bound parameters (user text) never appear in a database error's
    message or in echoed SQL (``hide_parameters``), so error logs hold none.
    ``statement_timeout_ms`` / ``lock_timeout_ms`` become PostgreSQL
    session settings (ignored on SQLite, whose waits are bounded by
    ``sqlite_busy_timeout_ms``). ``pool_timeout`` bounds the wait for a pooled
    connection; running out gives :class:`UnavailableError` in the helpers.
    On SQLite, write transactions of this engine queue in the process for
    the single write lock before they take a connection;
    ``sqlite_write_wait_seconds`` bounds that wait (then
    :class:`ConflictError`, like a busy database).
    """
    sa_url = make_url(url)
    backend = sa_url.get_backend_name()
    if backend == "postgresql":
        if sa_url.drivername == "postgresql":
            sa_url = sa_url.set(drivername="postgresql+asyncpg")
        if sa_url.get_driver_name() != "asyncpg":
            raise ValueError("PostgreSQL URLs must use the asyncpg driver (postgresql+asyncpg://)")
        server_settings = {"application_name": application_name}
        if statement_timeout_ms is not None:
            server_settings["statement_timeout"] = str(int(statement_timeout_ms))
        if lock_timeout_ms is not None:
            server_settings["lock_timeout"] = str(int(lock_timeout_ms))
        engine = create_async_engine(
            sa_url,
            echo=echo,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            hide_parameters=True,
            connect_args={"server_settings": server_settings, "timeout": connect_timeout},
        )
        event.listen(engine.sync_engine.pool, "connect", _mark_fresh)
        event.listen(engine.sync_engine.pool, "checkout", _ping_on_checkout)
        return engine
    if backend == "sqlite":
        if sa_url.drivername == "sqlite":
            sa_url = sa_url.set(drivername="sqlite+aiosqlite")
        if sa_url.get_driver_name() != "aiosqlite":
            raise ValueError("SQLite URLs must use the aiosqlite driver (sqlite+aiosqlite://)")
        return _sqlite_engine(
            sa_url,
            echo=echo,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            busy_timeout_ms=sqlite_busy_timeout_ms,
            write_wait_seconds=sqlite_write_wait_seconds,
        )
    raise ValueError(f"unsupported database backend {backend!r} (use postgresql or sqlite)")


_FRESH = "marketplace_fresh"


def _mark_fresh(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info[_FRESH] = True


def _ping_on_checkout(
    dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    """Pre-ping in one round trip: ``SELECT 1`` as a simple query on the asyncpg connection.

    SQLAlchemy's own ``pool_pre_ping`` for asyncpg wraps its ping in a
    transaction (for pgbouncer's transaction mode, which we do not use):
    BEGIN, ``;``, ROLLBACK, three round trips on every checkout. Same effect
    here: a connection just opened is not pinged; a dead one invalidates the
    whole pool generation (as a failed pre-ping does) and the pool retries
    the checkout with a new connection.
    """
    if record.info.pop(_FRESH, False):
        return
    try:
        await_only(dbapi_connection.driver_connection.execute("SELECT 1"))
    except Exception as exc:
        raise sa_exc.InvalidatePoolError("pre-ping failed") from exc


def _is_memory_sqlite(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def _sqlite_engine(
    url: URL,
    *,
    echo: bool,
    pool_size: int,
    max_overflow: int,
    pool_timeout: float,
    busy_timeout_ms: int,
    write_wait_seconds: float,
) -> AsyncEngine:
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
async def _write_gate(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[None]:
    """The SQLite engine's write gate, or nothing (PostgreSQL has row locks)."""
    bind = sessionmaker.kw.get("bind")
    gate = _WRITE_GATES.get(bind.sync_engine) if isinstance(bind, AsyncEngine) else None
    if gate is None:
        yield
        return
    async with gate.hold():
        yield


def dialect_name(engine: AsyncEngine) -> str:
    """The engine's dialect: ``"postgresql"`` or ``"sqlite"``."""
    return str(engine.dialect.name)


def is_postgres(engine: AsyncEngine) -> bool:
    """True when the engine talks to PostgreSQL."""
    return dialect_name(engine) == "postgresql"


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Session factory for ``engine``; objects stay usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


# --- transactions --------------------------------------------------------


def _transaction_options(session: AsyncSession, *, write: bool) -> dict[str, Any]:
    options: dict[str, Any] = {WRITE_OPTION: write}
    bind = session.bind
    if not write and bind is not None and bind.dialect.name == "postgresql":
        # BEGIN READ ONLY: a write in a read transaction fails loudly.
        options["postgresql_readonly"] = True
    return options


@asynccontextmanager
async def _transaction(
    sessionmaker: async_sessionmaker[AsyncSession], *, write: bool
) -> AsyncIterator[AsyncSession]:
    gate = _write_gate(sessionmaker) if write else contextlib.nullcontext()
    async with gate, sessionmaker() as session, session.begin():
        # Procure the connection now, so the begin hook sees the options.
        await session.connection(execution_options=_transaction_options(session, write=write))
        yield session


@asynccontextmanager
async def write_transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session inside one write transaction: committed on success, rolled back on error.

    No retries (see :func:`run_transaction`); database failures are mapped
    like there (:class:`ConflictError`, :class:`UnavailableError`).
    """
    try:
        async with _transaction(sessionmaker, write=True) as session:
            yield session
    except Exception as exc:
        translated = translate_db_error(exc)
        if translated is None:
            raise
        raise translated from exc


@asynccontextmanager
async def read_transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session inside one read-only transaction (READ ONLY on PostgreSQL)."""
    try:
        async with _transaction(sessionmaker, write=False) as session:
            yield session
    except Exception as exc:
        translated = translate_db_error(exc)
        if translated is None:
            raise
        raise translated from exc


async def run_transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
    fn: Callable[[AsyncSession], Awaitable[T]],
    *,
    write: bool = True,
    attempts: int = 3,
    base_delay: float = 0.01,
    max_delay: float = 0.5,
    rng: random.Random | None = None,
) -> T:
    """Run ``fn(session)`` in one transaction and commit; the unit of work of one RPC.

    ``fn`` must not commit. A serialization failure (40001), a deadlock
    (40P01) or a busy SQLite database rolls back and runs ``fn`` again, up to
    ``attempts`` times in all, sleeping a full-jitter exponential delay in
    between; after that :class:`ConflictError` (ABORTED + RetryInfo at the
    edge). A lock timeout (55P03) is a :class:`ConflictError` at once (the
    wait already used the time). A lost or refused connection is an
    :class:`UnavailableError` at once: the commit may or may not have landed,
    so only the caller, with its idempotency key, may repeat the call.
    :class:`AgentError` raised by ``fn`` and any other exception pass through.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    jitter = rng
    for attempt in range(1, attempts + 1):
        try:
            async with _transaction(sessionmaker, write=write) as session:
                return await fn(session)
        except Exception as exc:
            kind = _classify(exc)
            if kind in _RETRYABLE and attempt < attempts:
                jitter = jitter or random.Random()  # only a retry needs one
                delay = jitter.uniform(0, min(max_delay, base_delay * 2 ** (attempt - 1)))
                _log.info(
                    "db.transaction_retry",
                    attempt=attempt,
                    kind=kind.value,
                    sqlstate=_sqlstate(exc),
                    delay=round(delay, 4),
                )
                await asyncio.sleep(delay)
                continue
            translated = _to_agent_error(exc, kind)
            if translated is None:
                raise
            raise translated from exc
    raise AssertionError("unreachable")  # pragma: no cover


# --- error mapping -------------------------------------------------------


class _Kind(enum.Enum):
    CONFLICT = "conflict"
    BUSY = "busy"
    LOCK_TIMEOUT = "lock_timeout"
    STATEMENT_TIMEOUT = "statement_timeout"
    UNAVAILABLE = "unavailable"
    OTHER = "other"


_RETRYABLE = frozenset({_Kind.CONFLICT, _Kind.BUSY})
_CONFLICT_STATES = frozenset({"40001", "40P01"})
# admin/crash shutdown, cannot connect now, too many connections, out of memory/disk
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "53300", "53200", "53100"})
_SQLITE_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, timed out (TimeoutError is an OSError)
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # no pooled connection within pool_timeout
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the DBAPI error it wraps, and their causes (bounded)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 8:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend((getattr(current, "orig", None), current.__cause__))


def _sqlstate(exc: BaseException) -> str | None:
    for err in _chain(exc):
        state = getattr(err, "sqlstate", None)
        if isinstance(state, str) and state:
            return state
    return None


def _is_sqlite_busy(err: BaseException) -> bool:
    if not isinstance(err, sqlite3.OperationalError):
        return False
    code = getattr(err, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) in _SQLITE_BUSY_CODES:
        return True
    text = str(err).lower()
    return "database is locked" in text or "database table is locked" in text


def _classify(exc: BaseException) -> _Kind:
    if isinstance(exc, AgentError):
        return _Kind.OTHER
    state = _sqlstate(exc)
    if state in _CONFLICT_STATES:
        return _Kind.CONFLICT
    if state == "55P03":
        return _Kind.LOCK_TIMEOUT
    if state == "57014":
        return _Kind.STATEMENT_TIMEOUT
    if state is not None and (state in _UNAVAILABLE_STATES or state.startswith("08")):
        return _Kind.UNAVAILABLE
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return _Kind.UNAVAILABLE
    chain = list(_chain(exc))
    if any(_is_sqlite_busy(err) for err in chain):
        return _Kind.BUSY
    if any(isinstance(err, _CONNECTION_ERRORS) for err in chain):
        return _Kind.UNAVAILABLE
    return _Kind.OTHER


def _to_agent_error(exc: BaseException, kind: _Kind) -> AgentError | None:
    state = _sqlstate(exc)
    metadata = {"sqlstate": state} if state else {}
    if kind is _Kind.CONFLICT:
        return ConflictError(
            "the transaction conflicted with a concurrent one; retry the call",
            retry_after=CONFLICT_RETRY_AFTER,
            metadata=metadata,
        )
    if kind is _Kind.BUSY:
        return ConflictError(
            "the database is busy with other writers; retry the call",
            retry_after=CONFLICT_RETRY_AFTER,
        )
    if kind is _Kind.LOCK_TIMEOUT:
        return ConflictError(
            "a row lock could not be acquired in time; retry the call",
            reason="LOCK_TIMEOUT",
            retry_after=CONFLICT_RETRY_AFTER,
            metadata=metadata,
        )
    if kind is _Kind.STATEMENT_TIMEOUT:
        return DeadlineExceededError(
            "a database statement took too long", retry_after=UNAVAILABLE_RETRY_AFTER
        )
    if kind is _Kind.UNAVAILABLE:
        return UnavailableError(
            "the database is unavailable; retry later",
            reason="DATABASE_UNAVAILABLE",
            retry_after=UNAVAILABLE_RETRY_AFTER,
            metadata=metadata,
        )
    return None


def translate_db_error(exc: BaseException) -> AgentError | None:
    """The taxonomy error for a database failure, or None when ``exc`` is not one we map.

    Conflicts, deadlocks, lock timeouts and a busy SQLite database give
    :class:`ConflictError`; a lost or refused connection
    :class:`UnavailableError`; a statement timeout
    :class:`DeadlineExceededError`. Messages never contain SQL.
    """
    return _to_agent_error(exc, _classify(exc))
