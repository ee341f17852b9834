"""llm_limits (the shared provider-key limiter) and usage accounting on attempts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "llm_limits",
        sa.Column("limit_key", sa.String(300), nullable=False),
        sa.Column("request_tat", sa.Float(), nullable=False),
        sa.Column("token_tat", sa.Float(), nullable=False),
        sa.Column("cooldown_until", sa.Float(), nullable=False),
        sa.Column("cooldown_streak", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("limit_key", name=op.f("pk_llm_limits")),
    )
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("model", sa.String(200), nullable=False, server_default=""))
        for name in ("prompt_tokens", "completion_tokens"):
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("cost_nanos", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("error_reason", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("error_reason")
    with op.batch_alter_table("attempts") as batch:
        for name in ("cost_nanos", "completion_tokens", "prompt_tokens", "model"):
            batch.drop_column(name)
    op.drop_table("llm_limits")
