"""Throwaway databases for tests and benchmarks (marketplace_common.pg_admin)."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]
import pytest
from marketplace_common.pg_admin import asyncpg_dsn, create_database, throwaway_database


async def _exists(admin_url: str, name: str) -> bool:
    conn = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


async def test_a_throwaway_database_exists_inside_the_block_and_is_dropped_after(
    postgres_server_url: str,
) -> None:
    async with throwaway_database(postgres_server_url, prefix="pgadmin") as url:
        name = url.rsplit("/", 1)[1]
        assert await _exists(postgres_server_url, name)
        conn = await asyncpg.connect(asyncpg_dsn(url))
        await conn.close()
    assert not await _exists(postgres_server_url, name)


@pytest.mark.parametrize("name", ['x"; DROP DATABASE postgres; --', "Upper", "", "a-b"])
async def test_names_that_are_not_plain_identifiers_are_refused(
    postgres_server_url: str, name: str
) -> None:
    with pytest.raises(ValueError, match="not a plain database name"):
        await create_database(postgres_server_url, name)
