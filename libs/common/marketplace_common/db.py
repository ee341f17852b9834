"""Database kit: engines, sessions and the one-transaction-per-RPC helper.

Two backends, each set up in its own module:

* PostgreSQL through asyncpg (``postgresql+asyncpg://user@host:5432/db``),
  :mod:`marketplace_common.db_postgres`: pooled connections are pinged on
  checkout in one round trip, so after a database restart the service
  recovers without a restart. A connection lost in the middle of a
  transaction becomes :class:`~marketplace_common.errors.UnavailableError`,
  never INTERNAL.
* SQLite through aiosqlite (``sqlite+aiosqlite:///path/to/file.db``), the
  embedded default, :mod:`marketplace_common.db_sqlite`: WAL mode, a busy
  timeout, foreign keys on, ``BEGIN IMMEDIATE`` for write transactions and a
  deferred ``BEGIN`` for reads, and an in-process queue (the write gate) that
  write transactions take before they check out a connection.

Database failures are mapped to the error taxonomy in
:mod:`marketplace_common.db_errors` (:func:`translate_db_error`, re-exported
here).

This module keeps what callers use: :func:`create_engine` (which picks the
backend) and the transactions. Open a transaction with
:func:`write_transaction` / :func:`read_transaction` (no retries), or run a
whole RPC's work with :func:`run_transaction`, which retries serialization
failures and deadlocks and maps database trouble to the error taxonomy. Each
hands the work a SQLAlchemy :class:`~sqlalchemy.ext.asyncio.AsyncConnection`
inside the transaction (Core statements, no ORM session: a session's own
machinery cost more than the statements of a short RPC). On PostgreSQL the
transaction is begun and ended on the asyncpg connection itself (BEGIN with
its SET LOCALs in one message, COMMIT in another); statements may run through
the connection (``conn.execute``) or, on a hot path, as
:class:`~marketplace_common.db_statements.Statement` objects compiled once per
dialect and run on the driver connection (:mod:`marketplace_common.db_statements`).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import structlog
from sqlalchemy.engine import URL, Row, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.expression import Executable

from marketplace_common.db_errors import CONFLICT_RETRY_AFTER as CONFLICT_RETRY_AFTER
from marketplace_common.db_errors import (
    RETRYABLE_KINDS,
    DbErrorKind,
    classify_db_error,
    find_sqlstate,
    to_agent_error,
    translate_db_error,
)
from marketplace_common.db_errors import UNAVAILABLE_RETRY_AFTER as UNAVAILABLE_RETRY_AFTER
from marketplace_common.db_postgres import (
    begin_with_settings,
    connection_closed,
    finish,
    postgres_engine,
)
from marketplace_common.db_sqlite import WRITE_OPTION, sqlite_engine, write_gate
from marketplace_common.retrying import JITTER, Backoff, WaitPlan, retry_call

__all__ = [
    "WRITE_OPTION",
    "create_engine",
    "dialect_name",
    "is_postgres",
    "read_transaction",
    "run_transaction",
    "translate_db_error",
    "write_transaction",
]

T = TypeVar("T")

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
        return postgres_engine(
            sa_url,
            echo=echo,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            statement_timeout_ms=statement_timeout_ms,
            lock_timeout_ms=lock_timeout_ms,
            application_name=application_name,
            connect_timeout=connect_timeout,
        )
    if backend == "sqlite":
        if sa_url.drivername == "sqlite":
            sa_url = sa_url.set(drivername="sqlite+aiosqlite")
        if sa_url.get_driver_name() != "aiosqlite":
            raise ValueError("SQLite URLs must use the aiosqlite driver (sqlite+aiosqlite://)")
        return sqlite_engine(
            sa_url,
            echo=echo,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            busy_timeout_ms=sqlite_busy_timeout_ms,
            write_wait_seconds=sqlite_write_wait_seconds,
        )
    raise ValueError(f"unsupported database backend {backend!r} (use postgresql or sqlite)")


def dialect_name(engine: AsyncEngine) -> str:
    """The engine's dialect: ``"postgresql"`` or ``"sqlite"``."""
    return str(engine.dialect.name)


def is_postgres(engine: AsyncEngine) -> bool:
    """True when the engine talks to PostgreSQL."""
    return dialect_name(engine) == "postgresql"


# --- transactions --------------------------------------------------------

Settings = Callable[[], Mapping[str, int]]


@asynccontextmanager
async def _transaction(
    engine: AsyncEngine,
    *,
    write: bool,
    settings: Settings | None = None,
) -> AsyncIterator[AsyncConnection]:
    gate = write_gate(engine) if write else contextlib.nullcontext()
    postgres = engine.dialect.driver == "asyncpg"
    async with gate:
        for tries_left in (1, 0):
            async with engine.connect() as conn:
                if postgres:
                    try:
                        await _begin(conn, settings, write=write, retry=bool(tries_left))
                    except _LostBeforeBegin as lost:
                        _log.info("db.begin_on_lost_connection", error_class=lost.error_class)
                        continue
                    try:
                        yield conn
                    except BaseException as exc:
                        await _end_postgres(conn, exc)
                        raise
                    await _end_postgres(conn, None)
                else:
                    await conn.execution_options(**{WRITE_OPTION: write})
                    async with conn.begin():
                        yield conn
                return


class _LostBeforeBegin(Exception):
    """The connection was gone before the transaction's BEGIN: nothing ran, start over."""

    def __init__(self, error_class: str) -> None:
        super().__init__(error_class)
        self.error_class = error_class


def _lost(conn: AsyncConnection, exc: BaseException) -> bool:
    return classify_db_error(exc) is DbErrorKind.UNAVAILABLE or connection_closed(conn)


async def _invalidate(conn: AsyncConnection, exc: BaseException) -> None:
    """Drop ``conn``, and with it the pool's generation (a restarted server took them all),
    as SQLAlchemy does on a disconnect (and the pre-ping on failure)."""
    sync = conn.sync_connection
    if sync is not None and sync._dbapi_connection is not None:
        sync.engine.pool._invalidate(sync._dbapi_connection, exc)
    if not conn.invalidated:
        await conn.invalidate(exc)


async def _begin(
    conn: AsyncConnection, settings: Settings | None, *, write: bool, retry: bool
) -> None:
    """BEGIN now, with the SET LOCALs in its message (``db_postgres.begin_with_settings``).

    A pooled connection used a moment ago is not pinged on checkout
    (``db_postgres``); if it died since, nothing has run on it yet, so it is
    invalidated and the transaction starts over on a new connection (once).
    """
    try:
        await begin_with_settings(conn, settings() if settings else {}, readonly=not write)
    except Exception as exc:
        if not retry or not _lost(conn, exc):
            raise
        await _invalidate(conn, exc)
        raise _LostBeforeBegin(type(exc).__name__) from exc


async def _end_postgres(conn: AsyncConnection, error: BaseException | None) -> None:
    """COMMIT when the work returned (``error`` None), else ROLLBACK; a connection that
    failed on the way is invalidated, not returned to the pool.

    The work's own error wins over a failed ROLLBACK (the connection is gone with it).
    """
    if error is not None and (conn.invalidated or connection_closed(conn)):
        await _invalidate(conn, error)
        return
    try:
        await finish(conn, commit=error is None)
    except BaseException as exc:
        if _lost(conn, exc):
            await _invalidate(conn, exc)
        elif not conn.invalidated:
            # Alive but unusable (a statement cut short by a cancellation is still
            # running, say): this connection goes, the rest of the pool stays.
            await conn.invalidate(exc)
        if error is None:
            raise


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection inside one write transaction: committed on success, rolled back on error.

    No retries (see :func:`run_transaction`); database failures are mapped
    like there (:class:`ConflictError`, :class:`UnavailableError`).
    """
    try:
        async with _transaction(engine, write=True) as conn:
            yield conn
    except Exception as exc:
        translated = translate_db_error(exc)
        if translated is None:
            raise
        raise translated from exc


@asynccontextmanager
async def read_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection inside one read-only transaction (READ ONLY on PostgreSQL)."""
    try:
        async with _transaction(engine, write=False) as conn:
            yield conn
    except Exception as exc:
        translated = translate_db_error(exc)
        if translated is None:
            raise
        raise translated from exc


async def run_transaction(
    engine: AsyncEngine,
    fn: Callable[[AsyncConnection], Awaitable[T]],
    *,
    write: bool = True,
    attempts: int = 3,
    base_delay: float = 0.01,
    max_delay: float = 0.5,
    rng: random.Random | None = None,
    settings: Settings | None = None,
) -> T:
    """Run ``fn(connection)`` in one transaction and commit; the unit of work of one RPC.

    ``fn`` must not commit. A serialization failure (40001), a deadlock
    (40P01) or a busy SQLite database rolls back and runs ``fn`` again, up to
    ``attempts`` times in all, sleeping a full-jitter exponential delay in
    between; after that :class:`ConflictError` (ABORTED + RetryInfo at the
    edge). A lock timeout (55P03) is a :class:`ConflictError` at once (the
    wait already used the time). A lost or refused connection is an
    :class:`UnavailableError` at once: the commit may or may not have landed,
    so only the caller, with its idempotency key, may repeat the call.
    :class:`AgentError` raised by ``fn`` and any other exception pass through.
    On PostgreSQL, ``settings()`` (called per attempt) are ``SET LOCAL`` in
    the transaction's BEGIN message (``db_postgres.begin_with_settings``).
    """

    async def attempt() -> T:
        async with _transaction(engine, write=write, settings=settings) as conn:
            return await fn(conn)

    def log_retry(plan: WaitPlan) -> None:
        _log.info(
            "db.transaction_retry",
            attempt=plan.attempt,
            kind=classify_db_error(plan.error).value,
            sqlstate=find_sqlstate(plan.error),
            delay=round(plan.delay, 4),
        )

    try:
        return await retry_call(
            attempt,
            retry_on=lambda exc: classify_db_error(exc) in RETRYABLE_KINDS,
            wait=Backoff(base_delay, max_delay, rng or JITTER),
            attempts=attempts,
            before_wait=log_retry,
        )
    except Exception as exc:
        translated = to_agent_error(exc, classify_db_error(exc))
        if translated is None:
            raise
        raise translated from exc


async def run_statement(
    engine: AsyncEngine,
    statement: Executable,
    *,
    attempts: int = 3,
    base_delay: float = 0.01,
    max_delay: float = 0.5,
) -> list[Row[Any]]:
    """One statement as its own transaction, autocommit: the rows it returns.

    For a write that is one statement (an ``UPDATE ... RETURNING``, or several
    writes joined by data-modifying CTEs, which PostgreSQL runs atomically):
    a single round trip to the server instead of BEGIN, the statement and
    COMMIT. PostgreSQL only (SQLite needs the write gate and ``BEGIN
    IMMEDIATE``: use :func:`run_transaction` there). Conflicts are retried and
    errors mapped as :func:`run_transaction` does.
    """

    async def attempt() -> list[Row[Any]]:
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            result = await autocommit.execute(statement)
            return list(result) if result.returns_rows else []

    try:
        return await retry_call(
            attempt,
            retry_on=lambda exc: classify_db_error(exc) in RETRYABLE_KINDS,
            wait=Backoff(base_delay, max_delay, JITTER),
            attempts=attempts,
        )
    except Exception as exc:
        translated = to_agent_error(exc, classify_db_error(exc))
        if translated is None:
            raise
        raise translated from exc
