"""PostgreSQL engine setup: asyncpg with a one-round-trip ping on checkout.

PostgreSQL runs through asyncpg (``postgresql+asyncpg://user@host:5432/db``);
:func:`marketplace_common.db.create_engine` hands PostgreSQL URLs to
:func:`postgres_engine`. Pooled connections are pinged on checkout (one round
trip, see :func:`_ping_on_checkout`), so after a database restart the first
checkout notices the dead connection, the pool drops every connection of that
generation, and the service recovers without a restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util import await_only

__all__ = ["begin_with_settings", "postgres_engine"]


def postgres_engine(
    url: URL,
    *,
    echo: bool,
    pool_size: int,
    max_overflow: int,
    pool_timeout: float,
    statement_timeout_ms: int | None,
    lock_timeout_ms: int | None,
    application_name: str,
    connect_timeout: float,
) -> AsyncEngine:
    """An asyncpg engine with session settings and the checkout ping (see module doc)."""
    server_settings = {"application_name": application_name}
    if statement_timeout_ms is not None:
        server_settings["statement_timeout"] = str(int(statement_timeout_ms))
    if lock_timeout_ms is not None:
        server_settings["lock_timeout"] = str(int(lock_timeout_ms))
    engine = create_async_engine(
        url,
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


# --- BEGIN with SET LOCAL in one round trip --------------------------------------

_ISOLATION: dict[str | None, str] = {
    None: "",  # the server's default, as asyncpg leaves it
    "read_committed": " ISOLATION LEVEL READ COMMITTED",
    "read_uncommitted": " ISOLATION LEVEL READ UNCOMMITTED",
    "repeatable_read": " ISOLATION LEVEL REPEATABLE READ",
    "serializable": " ISOLATION LEVEL SERIALIZABLE",
}
LOCAL_SETTINGS = frozenset(
    {"lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout"}
)


class _BegunTransaction:
    """The asyncpg adapter's handle on a transaction whose BEGIN we sent ourselves."""

    __slots__ = ("_connection",)

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    async def commit(self) -> None:
        await self._connection.execute("COMMIT;")

    async def rollback(self) -> None:
        await self._connection.execute("ROLLBACK;")


async def begin_with_settings(session: AsyncSession, settings: Mapping[str, int]) -> bool:
    """Begin ``session``'s transaction with ``SET LOCAL name = value`` for each setting,
    all in one round trip; False (nothing sent) when that cannot be done here.

    SQLAlchemy's asyncpg adapter sends BEGIN on its own just before the first
    statement, so settings local to the transaction would cost a round trip
    more (``set_config(..., true)`` after BEGIN). Here BEGIN (with the
    adapter's isolation level, READ ONLY and DEFERRABLE as it would send them)
    and the SET LOCALs go as one simple-query message, and the adapter is
    handed the open transaction, which it commits or rolls back as its own.
    Only whole-number settings of :data:`LOCAL_SETTINGS` (milliseconds), so
    nothing but digits is ever spliced into the SQL. False when the session is
    not on asyncpg, its transaction has already begun, or it is in autocommit:
    the caller then sets them with ``set_config`` after all.
    """
    unknown = set(settings) - LOCAL_SETTINGS
    if unknown:
        raise ValueError(f"not a local setting begin_with_settings knows: {sorted(unknown)}")
    connection = await session.connection()
    if connection.dialect.driver != "asyncpg":
        return False
    adapted: Any = (await connection.get_raw_connection()).dbapi_connection
    isolation = _ISOLATION.get(getattr(adapted, "isolation_level", None))
    if isolation is None or getattr(adapted, "_transaction", True) is not None:
        return False
    sql = "BEGIN" + isolation
    if adapted.readonly:
        sql += " READ ONLY"
    if adapted.deferrable:
        sql += " DEFERRABLE"
    sql += ";" + "".join(f"SET LOCAL {name} = {int(value)};" for name, value in settings.items())
    driver = adapted.driver_connection
    async with adapted._execute_mutex:
        await driver.execute(sql)
        adapted._transaction = _BegunTransaction(driver)
    return True
