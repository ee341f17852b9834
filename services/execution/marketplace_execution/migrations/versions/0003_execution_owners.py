"""executions: owners (client_email, agent_id, submitted_by) and their list indexes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OWNERS = (
    ("client_email", 320, "ix_executions_client_created"),
    ("agent_id", 128, "ix_executions_agent_created"),
    ("submitted_by", 200, "ix_executions_submitter_created"),
)


def upgrade() -> None:
    for column, length, index in _OWNERS:
        op.add_column("executions", sa.Column(column, sa.String(length), nullable=True))
        op.create_index(index, "executions", [column, "created_at", "execution_id"])


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+ has it), once the index is gone.
    for column, _length, index in _OWNERS:
        op.drop_index(index, table_name="executions")
        op.drop_column("executions", column)
