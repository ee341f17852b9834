"""initial schema: tasks, bids, events, idempotency keys, delivery tokens

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bids",
        sa.Column("bid_id", sa.String(length=36), nullable=False),
        sa.Column("marketplace", sa.String(length=128), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("amount_currency", sa.String(length=3), nullable=False),
        sa.Column("amount_units", sa.BigInteger(), nullable=False),
        sa.Column("amount_nanos", sa.Integer(), nullable=False),
        sa.Column("proposal", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('PENDING', 'WITHDRAWN', 'ACCEPTED', 'REJECTED')",
            name=op.f("ck_bids_status"),
        ),
        sa.CheckConstraint(
            "amount_units >= 0 AND amount_nanos >= 0", name=op.f("ck_bids_amount_positive")
        ),
        sa.PrimaryKeyConstraint("bid_id", name=op.f("pk_bids")),
    )
    op.create_index(
        "ix_bids_agent_id_created_at", "bids", ["agent_id", "created_at", "bid_id"], unique=False
    )
    op.create_index("ix_bids_created_at", "bids", ["created_at", "bid_id"], unique=False)
    op.create_index(
        "ix_bids_job_id_marketplace_created_at",
        "bids",
        ["job_id", "marketplace", "created_at", "bid_id"],
        unique=False,
    )
    op.create_index(
        "ix_bids_marketplace_created_at",
        "bids",
        ["marketplace", "created_at", "bid_id"],
        unique=False,
    )
    op.create_index(
        "ix_bids_status_created_at", "bids", ["status", "created_at", "bid_id"], unique=False
    )
    op.create_index(
        "uq_bids_one_pending_per_job_agent",
        "bids",
        ["marketplace", "job_id", "agent_id"],
        unique=True,
        postgresql_where=sa.text("status = 'PENDING'"),
        sqlite_where=sa.text("status = 'PENDING'"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=36), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_table(
        "bid_events",
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("bid_id", sa.String(length=36), nullable=False),
        sa.Column("previous_status", sa.String(length=16), nullable=False),
        sa.Column("new_status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["bid_id"], ["bids.bid_id"], name=op.f("fk_bid_events_bid_id_bids")
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_bid_events")),
    )
    op.create_index(
        "ix_bid_events_bid_id_created_at",
        "bid_events",
        ["bid_id", "created_at", "event_id"],
        unique=False,
    )
    op.create_table(
        "tasks",
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("client_email", sa.String(length=320), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("budget_currency", sa.String(length=3), nullable=False),
        sa.Column("budget_units", sa.BigInteger(), nullable=False),
        sa.Column("budget_nanos", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("bid_id", sa.String(length=36), nullable=True),
        sa.Column("execution_id", sa.String(length=128), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error_type", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED')",
            name=op.f("ck_tasks_status"),
        ),
        sa.CheckConstraint(
            "budget_units >= 0 AND budget_nanos >= 0", name=op.f("ck_tasks_budget_positive")
        ),
        sa.ForeignKeyConstraint(["bid_id"], ["bids.bid_id"], name=op.f("fk_tasks_bid_id_bids")),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_tasks")),
    )
    op.create_index(
        "ix_tasks_client_email_created_at",
        "tasks",
        ["client_email", "created_at", "task_id"],
        unique=False,
    )
    op.create_index("ix_tasks_created_at", "tasks", ["created_at", "task_id"], unique=False)
    op.create_index(
        "ix_tasks_status_created_at", "tasks", ["status", "created_at", "task_id"], unique=False
    )
    op.create_index("uq_tasks_bid_id", "tasks", ["bid_id"], unique=True)
    op.create_table(
        "delivery_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.task_id"], name=op.f("fk_delivery_tokens_task_id_tasks")
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_delivery_tokens")),
    )
    op.create_index("ix_delivery_tokens_task_id", "delivery_tokens", ["task_id"], unique=False)
    op.create_table(
        "task_events",
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("previous_status", sa.String(length=16), nullable=False),
        sa.Column("new_status", sa.String(length=16), nullable=False),
        sa.Column("execution_id", sa.String(length=128), nullable=False),
        sa.Column("actor", sa.String(length=300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.task_id"], name=op.f("fk_task_events_task_id_tasks")
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_task_events")),
    )
    op.create_index(
        "ix_task_events_task_id_created_at",
        "task_events",
        ["task_id", "created_at", "event_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_task_events_task_id_created_at", table_name="task_events")
    op.drop_table("task_events")
    op.drop_index("ix_delivery_tokens_task_id", table_name="delivery_tokens")
    op.drop_table("delivery_tokens")
    op.drop_index("uq_tasks_bid_id", table_name="tasks")
    op.drop_index("ix_tasks_status_created_at", table_name="tasks")
    op.drop_index("ix_tasks_created_at", table_name="tasks")
    op.drop_index("ix_tasks_client_email_created_at", table_name="tasks")
    op.drop_table("tasks")
    op.drop_index("ix_bid_events_bid_id_created_at", table_name="bid_events")
    op.drop_table("bid_events")
    op.drop_table("idempotency_keys")
    op.drop_index(
        "uq_bids_one_pending_per_job_agent",
        table_name="bids",
        postgresql_where=sa.text("status = 'PENDING'"),
        sqlite_where=sa.text("status = 'PENDING'"),
    )
    op.drop_index("ix_bids_status_created_at", table_name="bids")
    op.drop_index("ix_bids_marketplace_created_at", table_name="bids")
    op.drop_index("ix_bids_job_id_marketplace_created_at", table_name="bids")
    op.drop_index("ix_bids_created_at", table_name="bids")
    op.drop_index("ix_bids_agent_id_created_at", table_name="bids")
    op.drop_table("bids")
