"""The wall clock both services stamp rows with."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["utc_now"]


def utc_now() -> datetime:
    """The current time, time-zone aware, in UTC."""
    return datetime.now(UTC)
