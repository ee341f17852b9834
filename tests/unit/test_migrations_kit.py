"""The migrations kit (Alembic on async engines) on SQLite and PostgreSQL.

Uses the tiny example tree in ``fixtures/migrations_kit`` (r1 creates
``widget``, r2 adds ``widget.note``), not a service's real migrations.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from marketplace_common.db import create_engine
from marketplace_common.migrations import (
    MIGRATION_LOCK_ID,
    alembic_config,
    current_revision,
    downgrade,
    downgrade_async,
    is_up_to_date,
    script_heads,
    upgrade,
    upgrade_async,
)
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

SCRIPTS = Path(__file__).parent / "fixtures" / "migrations_kit"

BROKEN_REVISION = '''"""Create a table, then fail."""

import sqlalchemy as sa
from alembic import op

revision = "r3"
down_revision = "r2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    raise RuntimeError("migration failed halfway")


def downgrade() -> None:
    op.drop_table("half_done")
'''


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url)
    yield eng
    await eng.dispose()


async def _tables(engine: AsyncEngine) -> dict[str, list[str]]:
    def read(connection: Connection) -> dict[str, list[str]]:
        inspector = inspect(connection)
        return {
            table: [column["name"] for column in inspector.get_columns(table)]
            for table in inspector.get_table_names()
        }

    async with engine.connect() as connection:
        return await connection.run_sync(read)


def test_script_heads_reads_the_tree() -> None:
    assert script_heads(SCRIPTS) == ("r2",)


def test_alembic_config_keeps_the_url_intact() -> None:
    url = "postgresql+asyncpg://u:p%40ss@h:5432/db"
    config = alembic_config(url, SCRIPTS)
    assert config.get_main_option("sqlalchemy.url") == url
    assert config.get_main_option("script_location") == str(SCRIPTS)


async def test_fresh_database_is_not_up_to_date(engine: AsyncEngine) -> None:
    assert await current_revision(engine) is None
    assert not await is_up_to_date(engine, SCRIPTS)


async def test_upgrade_from_a_running_loop_reaches_head(db_url: str, engine: AsyncEngine) -> None:
    upgrade(db_url, SCRIPTS)  # sync call from async code: runs on a worker thread
    assert await current_revision(engine) == "r2"
    assert await is_up_to_date(engine, SCRIPTS)
    assert (await _tables(engine))["widget"] == ["id", "name", "note"]


async def test_upgrade_twice_is_a_no_op(db_url: str, engine: AsyncEngine) -> None:
    await upgrade_async(db_url, SCRIPTS)
    await upgrade_async(db_url, SCRIPTS)
    assert await current_revision(engine) == "r2"


async def test_concurrent_upgrades_in_one_process_take_turns(
    db_url: str, engine: AsyncEngine
) -> None:
    await asyncio.gather(*(upgrade_async(db_url, SCRIPTS) for _ in range(3)))
    assert await is_up_to_date(engine, SCRIPTS)


@asynccontextmanager
async def _migration_gate(db_url: str) -> AsyncIterator[None]:
    """Hold what an upgrade waits for: the write lock (SQLite) or the advisory lock."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        conn = sqlite3.connect(url.database, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("COMMIT")
            conn.close()
        return
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        yield
    finally:
        await admin.close()


@pytest.mark.slow
async def test_concurrent_upgrades_from_several_processes_apply_each_revision_once(
    db_url: str, engine: AsyncEngine
) -> None:
    # Replicas starting with --migrate at the same moment: all wait at the
    # gate, then race once it opens.
    code = "import sys; from marketplace_common.migrations import upgrade; upgrade(*sys.argv[1:])"
    async with _migration_gate(db_url):
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, db_url, str(SCRIPTS), stderr=asyncio.subprocess.PIPE
            )
            for _ in range(4)
        ]
        await asyncio.sleep(1.5)
        assert [proc.returncode for proc in procs] == [None] * 4  # all waiting
    results = [await proc.communicate() for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, [err for _, err in results]
    assert await is_up_to_date(engine, SCRIPTS)


async def test_downgrade_steps_back_and_is_no_longer_up_to_date(
    db_url: str, engine: AsyncEngine
) -> None:
    await upgrade_async(db_url, SCRIPTS)
    downgrade(db_url, SCRIPTS, "r1")
    assert await current_revision(engine) == "r1"
    assert not await is_up_to_date(engine, SCRIPTS)
    assert (await _tables(engine))["widget"] == ["id", "name"]


async def test_downgrade_to_base_removes_everything(db_url: str, engine: AsyncEngine) -> None:
    await upgrade_async(db_url, SCRIPTS)
    await downgrade_async(db_url, SCRIPTS, "base")
    assert await current_revision(engine) is None
    assert "widget" not in await _tables(engine)


async def test_failed_migration_rolls_back_entirely(
    db_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(SCRIPTS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "r3_broken.py").write_text(BROKEN_REVISION)
    await upgrade_async(db_url, scripts, "r2")

    with pytest.raises(RuntimeError, match="halfway"):
        await upgrade_async(db_url, scripts)
    assert await current_revision(engine) == "r2"
    assert "half_done" not in await _tables(engine)  # DDL rolled back, SQLite too
