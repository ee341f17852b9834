"""PostgreSQL engine setup: asyncpg with a one-round-trip ping on checkout.

PostgreSQL runs through asyncpg (``postgresql+asyncpg://user@host:5432/db``);
:func:`marketplace_common.db.create_engine` hands PostgreSQL URLs to
:func:`postgres_engine`. Pooled connections are pinged on checkout (one round
trip, see :func:`_ping_on_checkout`), so after a database restart the first
checkout notices the dead connection, the pool drops every connection of that
generation, and the service recovers without a restart.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util import await_only

__all__ = [
    "adapted_connection",
    "begin_with_settings",
    "connection_closed",
    "driver_connection",
    "finish",
    "postgres_engine",
]


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
    event.listen(engine.sync_engine.pool, "checkin", _mark_returned)
    event.listen(engine.sync_engine.pool, "checkout", _ping_on_checkout)
    return engine


_FRESH = "marketplace_fresh"
_RETURNED = "marketplace_returned"

#: A pooled connection back in the pool for less than this (seconds) is not pinged
#: on checkout: it answered a moment ago, and if it died since, the transaction's
#: own BEGIN finds out and the transaction starts over on a new connection
#: (``marketplace_common.db``). One idle longer is pinged first.
PING_AFTER_IDLE_SECONDS = 1.0


def _mark_fresh(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info[_FRESH] = True


def _mark_returned(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info[_RETURNED] = time.monotonic()


def _ping_on_checkout(
    dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    """Pre-ping in one round trip: ``SELECT 1`` as a simple query on the asyncpg connection.

    SQLAlchemy's own ``pool_pre_ping`` for asyncpg wraps its ping in a
    transaction (for pgbouncer's transaction mode, which we do not use):
    BEGIN, ``;``, ROLLBACK, three round trips on every checkout. Same effect
    here: a connection just opened is not pinged, nor one returned less than
    :data:`PING_AFTER_IDLE_SECONDS` ago (under load that is every checkout,
    and the ping was a quarter of a read's round trips); a dead one
    invalidates the whole pool generation (as a failed pre-ping does) and the
    pool retries the checkout with a new connection.
    """
    if record.info.pop(_FRESH, False):
        return
    returned = record.info.get(_RETURNED)
    if returned is not None and time.monotonic() - returned < PING_AFTER_IDLE_SECONDS:
        return
    try:
        await_only(dbapi_connection.driver_connection.execute("SELECT 1"))
    except Exception as exc:
        raise sa_exc.InvalidatePoolError("pre-ping failed") from exc


# --- the transaction, on the driver connection ------------------------------------------

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


def adapted_connection(connection: AsyncConnection) -> Any:
    """SQLAlchemy's asyncpg adapter under ``connection`` (``.driver_connection``: asyncpg's)."""
    sync = connection.sync_connection
    if sync is None:
        raise RuntimeError("the connection is not started")
    return sync.connection.dbapi_connection


async def begin_with_settings(
    connection: AsyncConnection, settings: Mapping[str, int], *, readonly: bool
) -> None:
    """BEGIN on ``connection``'s asyncpg connection now, with ``SET LOCAL name = value`` for
    each setting, in one simple-query message (one round trip).

    SQLAlchemy's asyncpg adapter is handed the open transaction
    (``_BegunTransaction``): a statement run through SQLAlchemy on this
    connection does not send a BEGIN of its own, and the adapter commits or
    rolls it back as its own (:func:`finish`). ``readonly`` sends ``BEGIN
    READ ONLY``: a write in a read transaction fails loudly. Only whole-number
    settings of :data:`LOCAL_SETTINGS` (milliseconds), so nothing but digits
    is ever spliced into the SQL. An error is the driver's own (a lost
    connection: ``marketplace_common.db`` starts over on another).
    """
    unknown = set(settings) - LOCAL_SETTINGS
    if unknown:
        raise ValueError(f"not a local setting begin_with_settings knows: {sorted(unknown)}")
    adapted = adapted_connection(connection)
    if adapted._transaction is not None:
        raise RuntimeError("the connection is in a transaction already")
    sql = "BEGIN READ ONLY;" if readonly else "BEGIN;"
    sql += "".join(f"SET LOCAL {name} = {int(value)};" for name, value in settings.items())
    driver = adapted.driver_connection
    # Handed over before the message goes: if the call is cancelled (a client's
    # deadline) or fails after the server ran BEGIN, the adapter still sends
    # ROLLBACK when the connection goes back to the pool (a ROLLBACK with no
    # transaction open is only a warning). Otherwise the next checkout would
    # run inside the leftover transaction: READ ONLY, or already aborted.
    adapted._transaction = _BegunTransaction(driver)
    await driver.execute(sql)


async def finish(connection: AsyncConnection, *, commit: bool) -> None:
    """COMMIT (or ROLLBACK) the transaction :func:`begin_with_settings` opened.

    Through SQLAlchemy when a statement ran through it (its connection then
    holds a transaction whose end the adapter sends to the driver), straight
    on the driver otherwise: one round trip either way.
    """
    if connection.in_transaction():
        await (connection.commit() if commit else connection.rollback())
        return
    adapted = adapted_connection(connection)
    begun, adapted._transaction = adapted._transaction, None
    if begun is not None:
        await (begun.commit() if commit else begun.rollback())


def driver_connection(connection: AsyncConnection) -> Any:
    """The asyncpg connection under ``connection`` (for statements run on the driver)."""
    return adapted_connection(connection).driver_connection


def connection_closed(connection: AsyncConnection) -> bool:
    """True when the asyncpg connection under ``connection`` knows it is closed."""
    if connection.dialect.driver != "asyncpg" or connection.sync_connection is None:
        return False
    fairy = connection.sync_connection._dbapi_connection
    driver = getattr(getattr(fairy, "dbapi_connection", None), "driver_connection", None)
    return driver is not None and bool(driver.is_closed())
