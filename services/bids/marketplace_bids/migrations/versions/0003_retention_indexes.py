"""Indexes for retention: idempotency_keys.created_at and delivery_tokens.expires_at

Each purge batch (storage/retention.py) selects the oldest rows past a cutoff;
without these it would scan the whole table once per batch.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    op.create_index("ix_delivery_tokens_expires_at", "delivery_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_delivery_tokens_expires_at", table_name="delivery_tokens")
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
