"""The kit's engines never put bound parameters (user text) into error messages, so an
error log line with the exception holds none of the values."""

from __future__ import annotations

import pytest
import structlog
from marketplace_common.db import create_engine, run_transaction
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

SECRET = "prompt text the caller sent 7f3a"


@pytest.fixture(params=["sqlite", "postgres"])
def any_db_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    return url


async def test_error_log_line_of_a_failed_statement_has_no_parameters(any_db_url: str) -> None:
    engine = create_engine(any_db_url)

    async def insert(session: AsyncConnection) -> None:
        # Refused without the server echoing the value: too long for PostgreSQL,
        # a NOT NULL violation for SQLite (which does not check VARCHAR lengths).
        await session.execute(text("CREATE TEMPORARY TABLE t (v VARCHAR(5), n INTEGER NOT NULL)"))
        await session.execute(
            text("INSERT INTO t (v, n) VALUES (:v, :n)"), {"v": SECRET, "n": None}
        )

    try:
        with pytest.raises(Exception) as caught:
            await run_transaction(engine, insert)
    finally:
        await engine.dispose()
    log = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
    )
    line = log.error("rpc.unexpected_error", exc_info=caught.value)
    assert "INSERT INTO t" in line  # the statement failed and was rendered with its cause
    assert SECRET not in line
