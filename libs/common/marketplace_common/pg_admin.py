"""PostgreSQL administration: create and drop databases (tests, benchmarks, tools).

The services never call this; the test suite and the benchmarks use it to
give every run a database of its own next to an admin URL (a role that may
CREATE DATABASE).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy ``postgresql+asyncpg://`` URL as a plain libpq DSN for asyncpg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def database_url(admin_url: str, name: str) -> str:
    """The SQLAlchemy (asyncpg) URL of database ``name`` on ``admin_url``'s server."""
    url = make_url(admin_url).set(drivername="postgresql+asyncpg", database=name)
    return url.render_as_string(hide_password=False)


def _checked(name: str) -> str:
    # Names are interpolated into DDL (identifiers cannot be bound): allow only plain ones.
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return name


async def create_database(admin_url: str, name: str) -> str:
    """Create database ``name`` (from template0); returns its SQLAlchemy URL."""
    admin = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await admin.execute(f'CREATE DATABASE "{_checked(name)}" TEMPLATE template0')
    finally:
        await admin.close()
    return database_url(admin_url, name)


async def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name`` if it exists, disconnecting its sessions (WITH FORCE)."""
    admin = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{_checked(name)}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def throwaway_database(admin_url: str, *, prefix: str = "tmp") -> AsyncIterator[str]:
    """A new uniquely named database; yields its SQLAlchemy URL and drops it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:20]}"
    url = await create_database(admin_url, name)
    try:
        yield url
    finally:
        await drop_database(admin_url, name)
