"""executions and attempts

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from marketplace_execution.storage.tables import UtcDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = "status IN ('QUEUED', 'RUNNING', 'RETRY_SCHEDULED')"
STATUSES = "'QUEUED', 'RUNNING', 'RETRY_SCHEDULED', 'SUCCEEDED', 'FAILED', 'CANCELLED'"
ERROR_TYPES = "'TRANSIENT', 'PERMANENT', 'FATAL', 'LLM_FIXABLE'"


def upgrade() -> None:
    op.create_table(
        "executions",
        sa.Column("execution_id", sa.Uuid(), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("request_fingerprint", sa.String(64), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("output_schema", sa.Text(), nullable=True),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("pending_outcome", sa.String(20), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error_type", sa.String(20), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column(
            "cancel_requested", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", UtcDateTime(), nullable=False),
        sa.Column("heartbeat_at", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_executions_status")),
        sa.CheckConstraint(
            "pending_outcome IS NULL OR pending_outcome IN ('SUCCEEDED', 'FAILED', 'CANCELLED')",
            name=op.f("ck_executions_pending_outcome"),
        ),
        sa.CheckConstraint(
            f"error_type IS NULL OR error_type IN ({ERROR_TYPES})",
            name=op.f("ck_executions_error_type"),
        ),
        sa.CheckConstraint(
            "max_attempts BETWEEN 1 AND 10", name=op.f("ck_executions_max_attempts")
        ),
        sa.PrimaryKeyConstraint("execution_id", name=op.f("pk_executions")),
        sa.UniqueConstraint("request_id", name=op.f("uq_executions_request_id")),
    )
    op.create_index("ix_executions_created", "executions", ["created_at", "execution_id"])
    op.create_index(
        "ix_executions_task_created", "executions", ["task_id", "created_at", "execution_id"]
    )
    op.create_index(
        "ix_executions_status_created", "executions", ["status", "created_at", "execution_id"]
    )
    op.create_index(
        "ix_executions_claim",
        "executions",
        ["lease_expires_at"],
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )
    op.create_index(
        "uq_executions_active_task",
        "executions",
        ["task_id"],
        unique=True,
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("execution_id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=False),
        sa.Column("error_type", sa.String(20), nullable=True),
        sa.Column("code", sa.String(100), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("retry_delay", sa.Float(), nullable=False),
        sa.Column("delay_source", sa.String(30), nullable=False),
        sa.Column("pacing_delay", sa.Float(), nullable=False),
        sa.CheckConstraint("number >= 1", name=op.f("ck_attempts_number")),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["executions.execution_id"],
            name=op.f("fk_attempts_execution_id_executions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attempts")),
        sa.UniqueConstraint("execution_id", "number", name="uq_attempts_execution_number"),
    )


def downgrade() -> None:
    op.drop_table("attempts")
    op.drop_index("uq_executions_active_task", table_name="executions")
    op.drop_index("ix_executions_claim", table_name="executions")
    op.drop_index("ix_executions_status_created", table_name="executions")
    op.drop_index("ix_executions_task_created", table_name="executions")
    op.drop_index("ix_executions_created", table_name="executions")
    op.drop_table("executions")
