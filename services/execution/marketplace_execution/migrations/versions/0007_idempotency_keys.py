"""idempotency_keys: the kit's idempotency records, backfilled from executions

SubmitExecution's request_id moves to the same table and mechanism as the bids
service's keys (``marketplace_common.idempotency_sql``): scope
"SubmitExecution", key the request_id, the stored fingerprint, and as the
answer the id of the execution the request created. Every existing execution
gets its key here, so a repeat of an old request still answers its execution.

executions.request_id and request_fingerprint stay (still written, no longer
read to decide a repeat): a replica of the previous release, running during a
rolling upgrade, still reads them and its submits are still settled by the
unique index on request_id; and a downgrade loses nothing.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from marketplace_common.db_types import UtcDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCOPE = "SubmitExecution"
BATCH = 1000

_executions = sa.table(
    "executions",
    sa.column("execution_id", sa.Uuid()),
    sa.column("request_id", sa.Uuid()),
    sa.column("request_fingerprint", sa.String()),
    sa.column("created_at", UtcDateTime()),
)
_keys = sa.table(
    "idempotency_keys",
    sa.column("scope", sa.String()),
    sa.column("key", sa.String()),
    sa.column("fingerprint", sa.String()),
    sa.column("response", sa.LargeBinary()),
    sa.column("created_at", UtcDateTime()),
)


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=36), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    _backfill(op.get_bind())


def _backfill(bind: sa.Connection) -> None:
    """One key per execution, in batches in execution_id order (keyset, never OFFSET)."""
    e = _executions.c
    after: Any = None
    while True:
        query = sa.select(e.execution_id, e.request_id, e.request_fingerprint, e.created_at)
        if after is not None:
            query = query.where(e.execution_id > after)
        rows = bind.execute(query.order_by(e.execution_id).limit(BATCH)).all()
        if not rows:
            return
        records = [
            {
                "scope": SCOPE,
                "key": str(row.request_id),
                "fingerprint": row.request_fingerprint,
                "response": str(row.execution_id).encode(),
                "created_at": row.created_at,
            }
            for row in rows
        ]
        bind.execute(sa.insert(_keys), records)
        after = rows[-1].execution_id


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
