"""Column types shared by the services' SQLAlchemy models (and their migrations)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect
from sqlalchemy.types import TypeDecorator

__all__ = ["UtcDateTime"]


class UtcDateTime(TypeDecorator[datetime]):
    """A time-zone aware timestamp stored in UTC, read back aware in UTC on both backends.

    PostgreSQL keeps it as ``timestamptz``. SQLite has no time zones, so it
    stores naive UTC text (fixed width, so text order is time order) and the
    zone is put back on read. A naive datetime is refused on write: its zone
    would be a guess. The schema type is ``DateTime(timezone=True)``, so a
    migration may declare either that or this type.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UtcDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
