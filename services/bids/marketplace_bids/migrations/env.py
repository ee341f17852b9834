"""Alembic environment of the bids service (the kit drives the async engine)."""

from marketplace_common.migrations import run_env

from marketplace_bids.storage.tables import Base

run_env(Base.metadata)
