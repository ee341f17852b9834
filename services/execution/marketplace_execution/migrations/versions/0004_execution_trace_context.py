"""the submit's trace context and request id on each execution

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: executions submitted before this revision (or with tracing off) have none.
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("trace_parent", sa.String(55), nullable=True))
        batch.add_column(sa.Column("submit_request_id", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("submit_request_id")
        batch.drop_column("trace_parent")
