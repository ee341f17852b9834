"""UtcDateTime, the kit's timestamp column type: aware UTC in and out, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from marketplace_common.db_types import UtcDateTime
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect, make_url

PLUS_TWO = timezone(timedelta(hours=2))
MOMENT = datetime(2024, 5, 1, 14, 0, tzinfo=PLUS_TWO)


def postgresql_dialect() -> Dialect:
    """The asyncpg PostgreSQL dialect (its constructor is unannotated; the URL lookup is typed)."""
    return make_url("postgresql+asyncpg://").get_dialect()()


def test_sqlite_stores_naive_utc() -> None:
    stored = UtcDateTime().process_bind_param(MOMENT, sqlite.dialect())
    assert stored == datetime(2024, 5, 1, 12, 0)
    assert stored is not None
    assert stored.tzinfo is None


def test_postgresql_stores_aware_utc() -> None:
    stored = UtcDateTime().process_bind_param(MOMENT, postgresql_dialect())
    assert stored == MOMENT
    assert stored is not None
    assert stored.utcoffset() == timedelta(0)


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError):
        UtcDateTime().process_bind_param(datetime(2024, 1, 1), sqlite.dialect())


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql_dialect()], ids=["sqlite", "pg"])
def test_read_back_is_aware_utc(dialect: Dialect) -> None:
    naive = UtcDateTime().process_result_value(datetime(2024, 5, 1, 12, 0), dialect)
    aware = UtcDateTime().process_result_value(MOMENT, dialect)
    assert naive == aware == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert naive is not None
    assert aware is not None
    assert naive.tzinfo is UTC
    assert aware.tzinfo is UTC


def test_none_passes_through() -> None:
    assert UtcDateTime().process_bind_param(None, sqlite.dialect()) is None
    assert UtcDateTime().process_result_value(None, sqlite.dialect()) is None


def test_both_services_use_the_kit_type() -> None:
    from marketplace_bids.storage.tables import TaskRow
    from marketplace_execution.storage.tables import ExecutionRow

    for column in (TaskRow.__table__.c.created_at, ExecutionRow.__table__.c.created_at):
        assert type(column.type) is UtcDateTime
