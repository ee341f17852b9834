"""The execution's domain model: plain values, no transport and no storage types."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from marketplace_common.errors import ErrorType


class ExecutionStatus(enum.StrEnum):
    """QUEUED -> RUNNING -> (RETRY_SCHEDULED -> RUNNING)* -> SUCCEEDED | FAILED; CANCELLED from any
    non-terminal state."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    RETRY_SCHEDULED = "RETRY_SCHEDULED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        """True for SUCCEEDED, FAILED and CANCELLED: nothing changes after them."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}
)
ACTIVE_STATUSES = frozenset(
    {ExecutionStatus.QUEUED, ExecutionStatus.RUNNING, ExecutionStatus.RETRY_SCHEDULED}
)

DEFAULT_MAX_ATTEMPTS = 3
CANCELLED_MESSAGE = "execution cancelled by a caller"


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens and their cost (nano-USD) of one call, or the sum of several."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_nanos: int = 0

    @staticmethod
    def total(attempts: Iterable[AttemptView]) -> Usage:
        """The sum of the attempts' usage."""
        prompt = completion = cost = 0
        for attempt in attempts:
            prompt += attempt.prompt_tokens
            completion += attempt.completion_tokens
            cost += attempt.cost_nanos
        return Usage(prompt, completion, cost)


@dataclass(frozen=True, slots=True)
class AttemptView:
    """One stored call to the LLM provider.

    ``delay_source`` is the name of the retry delay's origin ("BACKOFF",
    "SERVER_RETRY_AFTER", "PACING" or "NONE").
    """

    number: int
    started_at: datetime
    finished_at: datetime
    error_type: ErrorType | None = None
    code: str = ""
    message: str = ""
    retry_delay: float = 0.0
    delay_source: str = "NONE"
    pacing_delay: float = 0.0
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_nanos: int = 0
    """The cost of this call's tokens in nano-USD (10^-9 USD) at the configured prices."""

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens, self.cost_nanos)

    @property
    def succeeded(self) -> bool:
        """True when the call produced an accepted answer."""
        return self.error_type is None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an execution ended, decided before it is reported to the bids service.

    ``status`` is the terminal status the execution takes once BidService knows.
    """

    status: ExecutionStatus
    result: str | None = None
    error_type: ErrorType | None = None
    error_message: str | None = None
    error_reason: str | None = None


@dataclass(frozen=True, slots=True)
class CallOrigin:
    """The SubmitExecution call an execution came from, for observability.

    ``trace_parent`` is its W3C traceparent (None with tracing off): the worker's
    spans continue that trace. ``request_id`` is its x-request-id: the worker logs
    it and carries it into its calls to BidService.
    """

    trace_parent: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Execution:
    """A run of a task's work through the LLM, with every attempt so far."""

    execution_id: uuid.UUID
    task_id: uuid.UUID
    request_id: uuid.UUID
    status: ExecutionStatus
    prompt: str
    model: str
    output_schema: str | None
    max_attempts: int
    created_at: datetime
    updated_at: datetime
    result: str | None = None
    error_type: ErrorType | None = None
    error_message: str | None = None
    pending_outcome: ExecutionStatus | None = None
    cancel_requested: bool = False
    lease_owner: str | None = None
    lease_epoch: int = 0
    """Claims of this execution so far (the fence of worker writes, with the owner)."""
    attempts: tuple[AttemptView, ...] = field(default=())
    error_reason: str | None = None
    # The owners (domain/access.py), recorded at submission; None on older rows.
    client_email: str | None = None
    agent_id: str | None = None
    submitted_by: str | None = None
    origin: CallOrigin | None = None

    @property
    def usage(self) -> Usage:
        """Every attempt's tokens and cost, summed."""
        return Usage.total(self.attempts)

    @property
    def terminal(self) -> bool:
        """True once the execution can no longer change."""
        return self.status.terminal

    @property
    def outcome(self) -> Outcome | None:
        """The decided (maybe not yet reported) outcome, or None while work goes on."""
        if self.pending_outcome is None:
            return None
        return Outcome(
            status=self.pending_outcome,
            result=self.result,
            error_type=self.error_type,
            error_message=self.error_message,
            error_reason=self.error_reason,
        )


@dataclass(frozen=True, slots=True)
class NewExecution:
    """What SubmitExecution stores."""

    execution_id: uuid.UUID
    task_id: uuid.UUID
    request_id: uuid.UUID
    request_fingerprint: str
    prompt: str
    model: str
    output_schema: str | None
    max_attempts: int
    created_at: datetime
    client_email: str | None = None
    agent_id: str | None = None
    submitted_by: str | None = None
    origin: CallOrigin | None = None


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """What the execution service needs to know of a BidService task."""

    task_id: uuid.UUID
    status: str
    title: str
    description: str
    execution_id: str = ""
    client_email: str = ""
    agent_id: str = ""
    """The agent whose bid was accepted ("" for a task created without a bid)."""


@dataclass(frozen=True, slots=True)
class ExecutionEvent:
    """One thing that happened to an execution, with its state afterwards.

    Exactly one of ``status_change`` (previous, new) and ``attempt`` is set.
    """

    execution: Execution
    status_change: tuple[ExecutionStatus | None, ExecutionStatus] | None = None
    attempt: AttemptView | None = None
