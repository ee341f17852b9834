"""Alembic environment of the execution service (the kit's async runner)."""

from __future__ import annotations

from marketplace_common.migrations import run_env

from marketplace_execution.storage.tables import Base

run_env(Base.metadata)
