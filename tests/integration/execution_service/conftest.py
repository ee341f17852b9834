"""Fixtures of the execution service's integration tests: migrated databases and a store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from marketplace_common.db import create_engine, make_sessionmaker
from marketplace_common.migrations import upgrade
from marketplace_execution.domain.models import NewExecution
from marketplace_execution.migrations import MIGRATIONS_DIR
from marketplace_execution.storage.store import SqlExecutionStore
from sqlalchemy.ext.asyncio import AsyncEngine


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated database of each backend."""
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    upgrade(url, MIGRATIONS_DIR)
    return url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def store(engine: AsyncEngine) -> SqlExecutionStore:
    return SqlExecutionStore(make_sessionmaker(engine))


def _new_execution(task_id: uuid.UUID | None = None, **overrides: object) -> NewExecution:
    """A NewExecution with fresh ids."""
    values: dict[str, object] = {
        "execution_id": uuid.uuid4(),
        "task_id": task_id or uuid.uuid4(),
        "request_id": uuid.uuid4(),
        "request_fingerprint": "f" * 64,
        "prompt": "write a haiku",
        "model": "offline-echo-1",
        "output_schema": None,
        "max_attempts": 3,
        "created_at": datetime.now(UTC),
    }
    values.update(overrides)
    return NewExecution(**values)  # type: ignore[arg-type]


NewExecutionFactory = Callable[..., NewExecution]


@pytest.fixture
def new_execution() -> NewExecutionFactory:
    """Makes NewExecution values with fresh ids (keyword overrides)."""
    return _new_execution
