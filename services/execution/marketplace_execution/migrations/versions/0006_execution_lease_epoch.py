"""lease_epoch: a counter of claims per execution, the fence of every worker write

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # 0 on existing rows: a run that holds one of them from before this revision
    # names no epoch and is fenced out at its next write; the execution is then
    # resumed by the next claim (epoch 1) once its lease expires.
    with op.batch_alter_table("executions") as batch:
        batch.add_column(
            sa.Column("lease_epoch", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("lease_epoch")
