"""tasks.agent_id: the agent whose bid was accepted

The execution service records a task's owners (client and winning agent) when
work is submitted, from GetTask; tasks made by AcceptBid copy the bid's agent.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("agent_id", sa.String(length=128), nullable=True))
    op.execute(
        "UPDATE tasks SET agent_id = "
        "(SELECT bids.agent_id FROM bids WHERE bids.bid_id = tasks.bid_id) "
        "WHERE bid_id IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_column("tasks", "agent_id")
