"""The execution service's migrations: they match the models and downgrade cleanly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from marketplace_common.db import create_engine
from marketplace_common.migrations import downgrade_async, is_up_to_date, upgrade_async
from marketplace_execution.migrations import MIGRATIONS_DIR
from marketplace_execution.storage.tables import Base
from sqlalchemy import inspect
from sqlalchemy.engine import Connection


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_migrated_schema_matches_the_models(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
        assert await is_up_to_date(engine, MIGRATIONS_DIR)
    finally:
        await engine.dispose()


async def test_downgrade_to_base_drops_the_tables_and_upgrade_restores_them(
    db_url: str,
) -> None:
    engine = create_engine(db_url)
    try:
        await downgrade_async(db_url, MIGRATIONS_DIR, "base")
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: inspect(c).get_table_names())
        assert "executions" not in tables
        assert "attempts" not in tables
        await upgrade_async(db_url, MIGRATIONS_DIR)
        assert await is_up_to_date(engine, MIGRATIONS_DIR)
    finally:
        await engine.dispose()
