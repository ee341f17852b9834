"""Fixtures for the bids service's integration tests: migrated databases and running servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc.aio
import pytest
from bids_support import Caller, migrate, start
from marketplace_bids.server import BidsServer


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


@dataclass
class Harness:
    """One running bids server and a channel to it."""

    server: BidsServer
    channel: grpc.aio.Channel
    url: str

    def as_(self, name: str) -> Caller:
        return Caller(self.channel, name)


async def open_harness(url: str, **overrides: Any) -> Harness:
    server = await start(url, **overrides)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return Harness(server, channel, url)


async def close_harness(harness: Harness) -> None:
    await harness.channel.close()
    await harness.server.stop(0.5)


@pytest.fixture
async def bids(db_url: str) -> AsyncIterator[Harness]:
    """A bids server on a fresh database (SQLite and PostgreSQL)."""
    harness = await open_harness(db_url)
    try:
        yield harness
    finally:
        await close_harness(harness)
