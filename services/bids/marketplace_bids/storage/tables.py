"""SQLAlchemy models of the bids service's tables (the migrations create the same)."""

from __future__ import annotations

from datetime import datetime

from marketplace_common.db_types import UtcDateTime
from marketplace_common.idempotency_sql import add_idempotency_table
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

UUID_LEN = 36
ID_LEN = 128
STATUS_LEN = 16


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _status_check(statuses: str) -> CheckConstraint:
    return CheckConstraint(f"status IN ({statuses})", name="status")


class TaskRow(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        _status_check("'PENDING', 'PROCESSING', 'COMPLETED', 'FAILED'"),
        CheckConstraint("budget_units >= 0 AND budget_nanos >= 0", name="budget_positive"),
        Index("ix_tasks_client_email_created_at", "client_email", "created_at", "task_id"),
        Index("ix_tasks_status_created_at", "status", "created_at", "task_id"),
        Index("ix_tasks_created_at", "created_at", "task_id"),
        Index("uq_tasks_bid_id", "bid_id", unique=True),
    )

    task_id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    client_email: Mapped[str] = mapped_column(String(320))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    budget_currency: Mapped[str] = mapped_column(String(3))
    budget_units: Mapped[int] = mapped_column(BigInteger)
    budget_nanos: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(STATUS_LEN))
    bid_id: Mapped[str | None] = mapped_column(String(UUID_LEN), ForeignKey("bids.bid_id"))
    # The accepted bid's agent (copied: the execution service records it as an owner).
    agent_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    execution_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    result: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str | None] = mapped_column(String(STATUS_LEN))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class BidRow(Base):
    __tablename__ = "bids"
    __table_args__ = (
        _status_check("'PENDING', 'WITHDRAWN', 'ACCEPTED', 'REJECTED'"),
        CheckConstraint("amount_units >= 0 AND amount_nanos >= 0", name="amount_positive"),
        # At most one PENDING bid per (marketplace, job, agent); a withdrawn or
        # decided bid leaves the index, so the agent may bid again.
        Index(
            "uq_bids_one_pending_per_job_agent",
            "marketplace",
            "job_id",
            "agent_id",
            unique=True,
            postgresql_where=text("status = 'PENDING'"),
            sqlite_where=text("status = 'PENDING'"),
        ),
        Index(
            "ix_bids_job_id_marketplace_created_at", "job_id", "marketplace", "created_at", "bid_id"
        ),
        Index("ix_bids_marketplace_created_at", "marketplace", "created_at", "bid_id"),
        Index("ix_bids_agent_id_created_at", "agent_id", "created_at", "bid_id"),
        Index("ix_bids_status_created_at", "status", "created_at", "bid_id"),
        Index("ix_bids_created_at", "created_at", "bid_id"),
    )

    bid_id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    marketplace: Mapped[str] = mapped_column(String(ID_LEN))
    job_id: Mapped[str] = mapped_column(String(ID_LEN))
    agent_id: Mapped[str] = mapped_column(String(ID_LEN))
    amount_currency: Mapped[str] = mapped_column(String(3))
    amount_units: Mapped[int] = mapped_column(BigInteger)
    amount_nanos: Mapped[int] = mapped_column(Integer)
    proposal: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(STATUS_LEN))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class BidEventRow(Base):
    __tablename__ = "bid_events"
    __table_args__ = (Index("ix_bid_events_bid_id_created_at", "bid_id", "created_at", "event_id"),)

    event_id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    bid_id: Mapped[str] = mapped_column(String(UUID_LEN), ForeignKey("bids.bid_id"))
    previous_status: Mapped[str] = mapped_column(String(STATUS_LEN))
    new_status: Mapped[str] = mapped_column(String(STATUS_LEN))
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class TaskEventRow(Base):
    __tablename__ = "task_events"
    __table_args__ = (
        Index("ix_task_events_task_id_created_at", "task_id", "created_at", "event_id"),
    )

    event_id: Mapped[str] = mapped_column(String(UUID_LEN), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(UUID_LEN), ForeignKey("tasks.task_id"))
    previous_status: Mapped[str] = mapped_column(String(STATUS_LEN))
    new_status: Mapped[str] = mapped_column(String(STATUS_LEN))
    execution_id: Mapped[str] = mapped_column(String(ID_LEN))
    actor: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class IdempotencyRow(Base):
    """One use of an idempotency key: the request's fingerprint and the response given.

    The kit's table (``marketplace_common.idempotency_sql``), the same in both
    services; retention deletes the oldest records in batches (storage/retention.py).
    """

    __table__ = add_idempotency_table(Base.metadata)

    scope: Mapped[str]
    key: Mapped[str]
    fingerprint: Mapped[str]
    response: Mapped[bytes]
    created_at: Mapped[datetime]


class DeliveryTokenRow(Base):
    """A delivery token: only the SHA-256 of the secret is stored."""

    __tablename__ = "delivery_tokens"
    __table_args__ = (
        Index("ix_delivery_tokens_task_id", "task_id"),
        Index("ix_delivery_tokens_expires_at", "expires_at"),  # retention's batches
    )

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(UUID_LEN), ForeignKey("tasks.task_id"))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
