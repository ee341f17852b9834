"""SQLAlchemy 2 models of the execution service's database (migrations/ must agree)."""

from __future__ import annotations

import uuid
from datetime import datetime

# Re-exported: the initial migration imports UtcDateTime from this module.
from marketplace_common.db_types import UtcDateTime as UtcDateTime
from marketplace_common.idempotency_sql import add_idempotency_table
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

STATUS_VALUES = ("QUEUED", "RUNNING", "RETRY_SCHEDULED", "SUCCEEDED", "FAILED", "CANCELLED")
ERROR_TYPE_VALUES = ("TRANSIENT", "PERMANENT", "FATAL", "LLM_FIXABLE")
ACTIVE_SQL = "status IN ('QUEUED', 'RUNNING', 'RETRY_SCHEDULED')"


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ExecutionRow(Base):
    __tablename__ = "executions"

    execution_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    task_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    # The SubmitExecution request: still written (unique), but a repeat is decided by
    # its key in idempotency_keys; kept for replicas of the previous release during a
    # rolling upgrade and for a lossless downgrade (migration 0007).
    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, unique=True)
    request_fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    prompt: Mapped[str] = mapped_column(Text, nullable=False)
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    output_schema: Mapped[str | None] = mapped_column(Text)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    # The decided terminal status, set before the outcome is reported to BidService;
    # `status` takes it once the report went through (a transactional outbox).
    pending_outcome: Mapped[str | None] = mapped_column(String(20))
    result: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str | None] = mapped_column(String(20))
    error_message: Mapped[str | None] = mapped_column(Text)
    # The final error's ErrorInfo reason (BUDGET_EXHAUSTED, LLM_OUTPUT_INVALID, ...).
    error_reason: Mapped[str | None] = mapped_column(String(100))
    cancel_requested: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=text("false")
    )
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    # Incremented by every claim; a worker's writes name the epoch of its claim, so a
    # run whose execution was claimed again since (even by the same owner) is fenced out.
    lease_epoch: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )
    # Never NULL: a free lease is one that expired (created_at, or the release time),
    # so claiming is one range scan of the partial index below.
    lease_expires_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    # The owners (domain/access.py), recorded at submission from BidService's task;
    # NULL on rows stored before they were (only admin sees those).
    client_email: Mapped[str | None] = mapped_column(String(320))
    agent_id: Mapped[str | None] = mapped_column(String(128))
    submitted_by: Mapped[str | None] = mapped_column(String(200))
    # The SubmitExecution call's W3C traceparent and x-request-id: the worker's spans
    # continue that trace and its calls to BidService carry that request id.
    trace_parent: Mapped[str | None] = mapped_column(String(55))
    submit_request_id: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        CheckConstraint(_in("status", STATUS_VALUES), name="status"),
        CheckConstraint(
            f"pending_outcome IS NULL OR {_in('pending_outcome', STATUS_VALUES[3:])}",
            name="pending_outcome",
        ),
        CheckConstraint(
            f"error_type IS NULL OR {_in('error_type', ERROR_TYPE_VALUES)}", name="error_type"
        ),
        CheckConstraint("max_attempts BETWEEN 1 AND 10", name="max_attempts"),
        # ListExecutions: newest first, optionally by task and/or status.
        Index("ix_executions_created", "created_at", "execution_id"),
        Index("ix_executions_task_created", "task_id", "created_at", "execution_id"),
        Index("ix_executions_status_created", "status", "created_at", "execution_id"),
        # "List my executions": one index per owner column.
        Index("ix_executions_client_created", "client_email", "created_at", "execution_id"),
        Index("ix_executions_agent_created", "agent_id", "created_at", "execution_id"),
        Index("ix_executions_submitter_created", "submitted_by", "created_at", "execution_id"),
        # Claiming: active rows whose lease expired, oldest first.
        Index(
            "ix_executions_claim",
            "lease_expires_at",
            postgresql_where=text(ACTIVE_SQL),
            sqlite_where=text(ACTIVE_SQL),
        ),
        # At most one active execution per task.
        Index(
            "uq_executions_active_task",
            "task_id",
            unique=True,
            postgresql_where=text(ACTIVE_SQL),
            sqlite_where=text(ACTIVE_SQL),
        ),
    )


#: The kit's idempotency records, the same table as the bids service's: one row per
#: SubmitExecution request_id (scope "SubmitExecution"), whose answer is the execution id.
IDEMPOTENCY_KEYS = add_idempotency_table(Base.metadata)


class AttemptRow(Base):
    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    execution_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("executions.execution_id", ondelete="CASCADE"), nullable=False
    )
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    finished_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    error_type: Mapped[str | None] = mapped_column(String(20))
    code: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    retry_delay: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    delay_source: Mapped[str] = mapped_column(String(30), nullable=False, default="NONE")
    pacing_delay: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    # Usage accounting: the model that answered (or was asked), the reported tokens
    # and their cost in nano-USD (10^-9 USD) at the configured prices.
    model: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    prompt_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    cost_nanos: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)

    __table_args__ = (
        UniqueConstraint("execution_id", "number", name="uq_attempts_execution_number"),
        CheckConstraint("number >= 1", name="number"),
    )


class LimitRow(Base):
    """One provider key's shared limiter state (``storage.limits``); times are epoch
    seconds of the database's clock."""

    __tablename__ = "llm_limits"

    limit_key: Mapped[str] = mapped_column(String(300), primary_key=True)
    request_tat: Mapped[float] = mapped_column(Float, nullable=False)
    token_tat: Mapped[float] = mapped_column(Float, nullable=False)
    cooldown_until: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    cooldown_streak: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    epoch: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class QuotaRow(Base):
    """One principal's Complete counter for one window (``domain.quota``)."""

    __tablename__ = "complete_quota"

    principal: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    used: Mapped[int] = mapped_column(BigInteger, nullable=False)
