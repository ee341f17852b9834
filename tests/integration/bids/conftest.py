"""Fixtures for the bids service's integration tests: migrated databases and running servers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from bids_support import Harness, close_harness, migrate, open_harness


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
)
def raw_db_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database: a SQLite file, and PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
async def db_url(raw_db_url: str) -> str:
    """A fresh database migrated to the newest schema (SQLite and PostgreSQL)."""
    await migrate(raw_db_url)
    return raw_db_url


@pytest.fixture
async def bids(db_url: str) -> AsyncIterator[Harness]:
    """A bids server on a fresh database (SQLite and PostgreSQL)."""
    harness = await open_harness(db_url)
    try:
        yield harness
    finally:
        await close_harness(harness)
