"""One idempotency mechanism: both services' migrations create the same
``idempotency_keys`` table (the kit's), on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from marketplace_bids.migrations import SCRIPT_LOCATION as BIDS_MIGRATIONS
from marketplace_bids.storage.tables import Base as BidsBase
from marketplace_common.db import create_engine
from marketplace_common.idempotency_sql import IDEMPOTENCY_TABLE
from marketplace_common.migrations import upgrade_async
from marketplace_common.pg_admin import throwaway_database
from marketplace_execution.migrations import MIGRATIONS_DIR as EXECUTION_MIGRATIONS
from marketplace_execution.storage.tables import Base as ExecutionBase
from sqlalchemy import Connection, inspect


@pytest.fixture(params=["sqlite", "postgres"])
def server_url(request: pytest.FixtureRequest) -> str | None:
    """None for SQLite, else the PostgreSQL server."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_server_url")
    return url


@pytest.fixture
async def two_urls(server_url: str | None, tmp_path: Path) -> AsyncIterator[list[str]]:
    """Two fresh, empty databases of one backend: one for each service."""
    if server_url is None:
        yield [f"sqlite+aiosqlite:///{tmp_path / name}.db" for name in ("bids", "execution")]
        return
    async with (
        throwaway_database(server_url, prefix="bidskeys") as bids,
        throwaway_database(server_url, prefix="execkeys") as execution,
    ):
        yield [bids, execution]


def _shape(connection: Connection) -> dict[str, Any]:
    found = inspect(connection)
    columns = [
        (c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns(IDEMPOTENCY_TABLE)
    ]
    indexes = sorted(
        (i["name"], tuple(i["column_names"]), bool(i["unique"]))
        for i in found.get_indexes(IDEMPOTENCY_TABLE)
    )
    return {
        "columns": columns,
        "primary key": found.get_pk_constraint(IDEMPOTENCY_TABLE),
        "indexes": indexes,
    }


async def _migrated_shape(url: str, migrations: Any) -> dict[str, Any]:
    await upgrade_async(url, migrations)
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_shape)
    finally:
        await engine.dispose()


async def test_both_services_migrate_the_same_idempotency_table(two_urls: list[str]) -> None:
    bids_url, execution_url = two_urls
    bids = await _migrated_shape(bids_url, BIDS_MIGRATIONS)
    execution = await _migrated_shape(execution_url, EXECUTION_MIGRATIONS)
    assert bids == execution
    assert [name for name, _type, _null in bids["columns"]] == [
        "scope", "key", "fingerprint", "response", "created_at",
    ]  # fmt: skip
    assert bids["primary key"]["constrained_columns"] == ["scope", "key"]
    assert bids["indexes"] == [("ix_idempotency_keys_created_at", ("created_at",), False)]


def test_both_models_hold_the_kits_table() -> None:
    bids = BidsBase.metadata.tables[IDEMPOTENCY_TABLE]
    execution = ExecutionBase.metadata.tables[IDEMPOTENCY_TABLE]
    shape = [(c.name, repr(c.type), c.nullable, c.primary_key) for c in bids.columns]
    assert shape == [(c.name, repr(c.type), c.nullable, c.primary_key) for c in execution.columns]
    assert {i.name for i in bids.indexes} == {i.name for i in execution.indexes}
