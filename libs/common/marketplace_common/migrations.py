"""Alembic wired for async engines.

A service's ``migrations/env.py`` is two lines::

    from marketplace_common.migrations import run_env
    from marketplace_bids.storage.tables import metadata

    run_env(metadata)

and the service upgrades with ``upgrade(url, script_location)`` (its CLI's
``migrate``) and checks at startup with ``await is_up_to_date(engine,
script_location)``.

Event loops: Alembic's commands are synchronous, and ``run_env`` drives the
async engine with ``asyncio.run`` in the thread running the command. So a
command must run on a thread without an event loop: :func:`upgrade` and
:func:`downgrade` notice a running loop in the calling thread and hand the
command to a worker thread, waiting for it (which blocks that loop for the
duration); async code should ``await upgrade_async(...)`` instead, which runs
the command with :func:`asyncio.to_thread` and keeps the loop serving.
``is_up_to_date`` / ``current_revision`` are async and read the version table
through ``AsyncConnection.run_sync``.

Each upgrade or downgrade runs in one transaction, on SQLite too (we emit
``BEGIN IMMEDIATE`` ourselves, see :mod:`marketplace_common.db`), and
concurrent runs are serialised: across processes by a transaction-scoped
advisory lock on PostgreSQL and the write lock on SQLite, so several replicas
starting with ``--migrate`` at once apply each revision once; within a
process by a lock, since Alembic's ``context``/``op`` proxies are global. On SQLite, autogenerate
renders batch operations (``render_as_batch``), since SQLite cannot alter
most column properties in place.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_common.db import WRITE_OPTION, create_engine

__all__ = [
    "MIGRATION_LOCK_ID",
    "URL_ATTRIBUTE",
    "NotMigratedError",
    "alembic_config",
    "current_revision",
    "downgrade",
    "downgrade_async",
    "is_up_to_date",
    "require_migrated",
    "run_env",
    "script_heads",
    "upgrade",
    "upgrade_async",
]

#: Config.attributes key holding the database URL (unescaped, password intact).
URL_ATTRIBUTE = "marketplace_database_url"

#: PostgreSQL advisory lock held by a running upgrade/downgrade (visible in pg_locks).
MIGRATION_LOCK_ID = 0x6D61726B6574  # "market"

# alembic.context and alembic.op are process-wide proxies: one command at a time.
_COMMAND_LOCK = threading.Lock()


def _url_string(url: str | URL) -> str:
    if isinstance(url, URL):
        return url.render_as_string(hide_password=False)
    return url


def alembic_config(url: str | URL, script_location: str | Path) -> Config:
    """An Alembic ``Config`` for ``url`` and a migrations directory (no ini file needed)."""
    url_text = _url_string(url)
    config = Config()
    config.set_main_option("script_location", str(script_location))
    # configparser interpolates '%': escape it for Alembic's own readers.
    config.set_main_option("sqlalchemy.url", url_text.replace("%", "%%"))
    config.attributes[URL_ATTRIBUTE] = url_text
    return config


def _locked(fn: Callable[..., Any], *args: Any) -> None:
    with _COMMAND_LOCK:
        fn(*args)


def _run_command(fn: Callable[..., Any], *args: Any) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _locked(fn, *args)
        return
    # A loop runs in this thread, and env.py needs asyncio.run of its own.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="alembic") as pool:
        pool.submit(_locked, fn, *args).result()


def upgrade(url: str | URL, script_location: str | Path, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (default: the newest)."""
    _run_command(command.upgrade, alembic_config(url, script_location), revision)


def downgrade(url: str | URL, script_location: str | Path, revision: str) -> None:
    """Downgrade the database at ``url`` to ``revision`` (``"base"``: drop everything)."""
    _run_command(command.downgrade, alembic_config(url, script_location), revision)


async def upgrade_async(
    url: str | URL, script_location: str | Path, revision: str = "head"
) -> None:
    """:func:`upgrade` on a worker thread, leaving the event loop free."""
    await asyncio.to_thread(upgrade, url, script_location, revision)


async def downgrade_async(url: str | URL, script_location: str | Path, revision: str) -> None:
    """:func:`downgrade` on a worker thread, leaving the event loop free."""
    await asyncio.to_thread(downgrade, url, script_location, revision)


def script_heads(script_location: str | Path) -> tuple[str, ...]:
    """The head revision(s) of a migrations directory."""
    script = ScriptDirectory(str(script_location))
    return tuple(script.get_heads())


async def _current_heads(engine: AsyncEngine) -> tuple[str, ...]:
    def read(connection: Connection) -> tuple[str, ...]:
        return tuple(MigrationContext.configure(connection).get_current_heads())

    async with engine.connect() as connection:
        return await connection.run_sync(read)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's current revision; None when it was never migrated.

    Raises ``alembic.util.CommandError`` if the database has several heads.
    """

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(read)


async def is_up_to_date(engine: AsyncEngine, script_location: str | Path) -> bool:
    """True when the database is at the migrations directory's head(s)."""
    expected = await asyncio.to_thread(script_heads, script_location)
    return set(await _current_heads(engine)) == set(expected)


class NotMigratedError(RuntimeError):
    """The database is not at the newest migration (run ``<service>-service migrate``)."""


async def require_migrated(engine: AsyncEngine, script_location: str | Path, service: str) -> None:
    """NotMigratedError unless the database of ``service`` ("bids", "execution") is at its head."""
    if not await is_up_to_date(engine, script_location):
        raise NotMigratedError(
            f"the {service} database is not migrated: run `{service}-service migrate` "
            f"or `{service}-service serve --migrate`"
        )


# --- env.py --------------------------------------------------------------


def run_env(target_metadata: MetaData | None) -> None:
    """The body of a service's ``migrations/env.py``: run the migrations Alembic asked for.

    Online mode uses ``config.attributes["connection"]`` when the caller
    passed a (sync) connection, as in Alembic's cookbook, else it opens an
    async engine for the configured URL (see :func:`alembic_config`).
    """
    config = context.config
    url = config.attributes.get(URL_ATTRIBUTE) or config.get_main_option("sqlalchemy.url")
    if context.is_offline_mode():
        if not url:
            raise ValueError("no database URL configured for the migrations")
        context.configure(
            url=url,
            target_metadata=target_metadata,
            literal_binds=True,
            render_as_batch=make_url(url).get_backend_name() == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run_migrations(connection, target_metadata)
        return
    if not url:
        raise ValueError("no database URL configured for the migrations")
    asyncio.run(_run_online(url, target_metadata))


async def _run_online(url: str, target_metadata: MetaData | None) -> None:
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as connection:
            # Write transaction: BEGIN IMMEDIATE on SQLite.
            await connection.execution_options(**{WRITE_OPTION: True})
            await connection.run_sync(_run_migrations, target_metadata)
            await connection.commit()
    finally:
        await engine.dispose()


def _run_migrations(connection: Connection, target_metadata: MetaData | None) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=sqlite,
        # Our own BEGIN makes SQLite DDL transactional as well.
        transactional_ddl=True,
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
        context.run_migrations()
