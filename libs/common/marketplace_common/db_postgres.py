"""PostgreSQL engine setup: asyncpg with a one-round-trip ping on checkout.

PostgreSQL runs through asyncpg (``postgresql+asyncpg://user@host:5432/db``);
:func:`marketplace_common.db.create_engine` hands PostgreSQL URLs to
:func:`postgres_engine`. Pooled connections are pinged on checkout (one round
trip, see :func:`_ping_on_checkout`), so after a database restart the first
checkout notices the dead connection, the pool drops every connection of that
generation, and the service recovers without a restart.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util import await_only

__all__ = ["postgres_engine"]


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
