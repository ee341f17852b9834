"""What the domain needs from the outside world, as Protocols.

``storage`` implements :class:`ExecutionStore` with SQLAlchemy (each method one
transaction); ``api`` implements :class:`BidsGateway` over gRPC.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from marketplace_common.errors import AgentError, ErrorType
from marketplace_common.idempotency import IdempotencyKey
from marketplace_common.paging import PageCursor

from marketplace_execution.domain.access import OwnerScope
from marketplace_execution.domain.models import (
    AttemptView,
    Execution,
    ExecutionStatus,
    NewExecution,
    Outcome,
    TaskInfo,
)


@dataclass(frozen=True, slots=True)
class LeaseRenewal:
    """What a heartbeat learned: the executions still held, and those a caller cancelled."""

    held: frozenset[uuid.UUID]
    cancel_requested: frozenset[uuid.UUID]


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Executions waiting for a worker, and since when the longest-waiting one waits."""

    depth: int
    oldest_waiting_since: datetime | None


@dataclass(frozen=True, slots=True)
class Lease:
    """What one claim of one execution gave a run: the pool's owner name and the
    claim's epoch (the execution's count of claims). Every fenced write names both,
    so a run whose execution was claimed again since, by another pool or by its
    own (a heartbeat that failed for a whole lease), changes nothing."""

    owner: str
    epoch: int


class Claimed(list[uuid.UUID]):
    """The executions a claim took, and how many of them it took over from another
    worker whose lease had expired (the rest were free); ``epochs`` holds each
    one's epoch after this claim, ``executions`` each one as claimed (with its
    attempts), so a run starts without reading it again."""

    def __init__(
        self,
        ids: Sequence[uuid.UUID] = (),
        taken_over: int = 0,
        epochs: Mapping[uuid.UUID, int] | None = None,
        executions: Mapping[uuid.UUID, Execution] | None = None,
    ) -> None:
        super().__init__(ids)
        self.taken_over = taken_over
        self.epochs: dict[uuid.UUID, int] = dict(epochs or {})
        self.executions: dict[uuid.UUID, Execution] = dict(executions or {})


class ExecutionStore(Protocol):
    """Durable executions and attempts. Worker writes are fenced on the run's ``lease``
    (owner and claim epoch): a run that no longer holds it gets LeaseLostError and
    must stop."""

    async def get(self, execution_id: uuid.UUID) -> Execution:
        """The execution with its attempts; ExecutionNotFoundError if unknown."""
        ...

    async def replay(self, key: IdempotencyKey[uuid.UUID]) -> Execution | None:
        """The execution a SubmitExecution key created, as it is now; None for a new
        key; IdempotencyKeyReusedError when the key came with another request."""
        ...

    async def create(self, new: NewExecution) -> Execution:
        """Stores a QUEUED execution and its request's key (``submit_key``) in one
        transaction; ExecutionAlreadyActiveError when the task has one; a twin with
        the same key gets the first's execution (or IdempotencyKeyReusedError)."""
        ...

    async def list_page(
        self,
        *,
        task_id: uuid.UUID | None,
        status: ExecutionStatus | None,
        after: PageCursor | None,
        limit: int,
        owner: OwnerScope | None = None,
    ) -> Sequence[Execution]:
        """Up to ``limit`` executions, newest first, strictly after ``after``; with
        ``owner``, only those whose owner column has that value."""
        ...

    async def request_cancel(self, execution_id: uuid.UUID, now: datetime) -> Execution:
        """Decides CANCELLED for an active execution (reported by a worker);
        ExecutionNotActiveError if it already finished or its outcome is decided."""
        ...

    async def claim(
        self,
        owner: str,
        limit: int,
        now: datetime,
        lease_seconds: float,
        *,
        skip: Collection[uuid.UUID] = (),
    ) -> Claimed:
        """Takes the lease of up to ``limit`` executions that need a worker, except
        those in ``skip`` (the ones the claiming pool still runs); each claim
        increments the execution's epoch."""
        ...

    async def queue_stats(self, now: datetime) -> QueueStats:
        """The executions a claim at ``now`` could take: how many, and the oldest."""
        ...

    async def renew(
        self, owner: str, epochs: Mapping[uuid.UUID, int], now: datetime, lease_seconds: float
    ) -> LeaseRenewal:
        """Extends the leases ``owner`` still holds among ``epochs`` (execution id to the
        epoch of the claim its run holds)."""
        ...

    async def release(self, execution_id: uuid.UUID, lease: Lease) -> None:
        """Gives the lease back (a no-op when not held)."""
        ...

    async def set_status(
        self,
        execution_id: uuid.UUID,
        lease: Lease,
        status: ExecutionStatus,
        now: datetime,
        *,
        attempts: Sequence[AttemptView] | None = None,
    ) -> Execution:
        """Fenced status change of an execution still being worked on.

        ``attempts`` (here and in every fenced write below): the execution's
        attempts as the run holding the lease knows them; the execution comes
        back with them (plus the one an ``add_attempt`` stores) instead of
        reading them again. None reads them."""
        ...

    async def add_attempt(
        self,
        execution_id: uuid.UUID,
        lease: Lease,
        attempt: AttemptView,
        status: ExecutionStatus,
        now: datetime,
        *,
        attempts: Sequence[AttemptView] | None = None,
    ) -> Execution:
        """Fenced: stores one attempt and the status that follows it."""
        ...

    async def decide(
        self,
        execution_id: uuid.UUID,
        lease: Lease,
        outcome: Outcome,
        now: datetime,
        *,
        attempts: Sequence[AttemptView] | None = None,
    ) -> Execution:
        """Fenced: stores the outcome to report (the status stays until it is reported)."""
        ...

    async def revise(
        self,
        execution_id: uuid.UUID,
        lease: Lease,
        outcome: Outcome,
        now: datetime,
        *,
        attempts: Sequence[AttemptView] | None = None,
    ) -> Execution:
        """Fenced: replaces a decided outcome that is not applied yet (BidService refused
        to complete the task for good, so the execution fails instead)."""
        ...

    async def finish(
        self,
        execution_id: uuid.UUID,
        lease: Lease,
        now: datetime,
        *,
        attempts: Sequence[AttemptView] | None = None,
    ) -> Execution:
        """Fenced: applies the reported outcome (terminal status) and frees the lease."""
        ...


class BidsGateway(Protocol):
    """BidService as the execution service uses it. Errors are AgentError kinds
    (TaskNotFoundError, UnavailableError, FailedPreconditionError, ...)."""

    async def get_task(self, task_id: uuid.UUID) -> TaskInfo:
        """The task; TaskNotFoundError when BidService does not know it."""
        ...

    async def start_task(self, task_id: uuid.UUID, execution_id: uuid.UUID, event_id: str) -> None:
        """Task PENDING -> PROCESSING (idempotent on event_id)."""
        ...

    async def complete_task(
        self, task_id: uuid.UUID, execution_id: uuid.UUID, event_id: str, result: str
    ) -> None:
        """Task PROCESSING -> COMPLETED (idempotent on event_id)."""
        ...

    async def fail_task(
        self,
        task_id: uuid.UUID,
        execution_id: uuid.UUID,
        event_id: str,
        error_type: ErrorType,
        message: str,
    ) -> None:
        """Task PROCESSING -> FAILED (idempotent on event_id)."""
        ...


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One piece of LLM work, as the attempt loop runs it.

    ``time_left``: seconds the caller still waits (Complete's gRPC deadline);
    the loop's deadline is the smaller of it and the configured one.
    """

    prompt: str
    model: str
    output_schema: str | None
    max_attempts: int
    time_left: float | None = None


@dataclass(frozen=True, slots=True)
class JobResult:
    """The attempt loop's answer: ``text`` on success, else ``error``."""

    text: str | None
    model: str
    error: AgentError | None = None
    attempts: tuple[AttemptView, ...] = ()

    @property
    def succeeded(self) -> bool:
        return self.error is None


AttemptCallback = Callable[[AttemptView, bool], Awaitable[None]]
"""Called after each attempt with the attempt and whether another one follows."""


class JobRunner(Protocol):
    """Runs the attempt loop (pacing, smart retry) for one job."""

    async def run(
        self,
        job: JobSpec,
        *,
        previous: Sequence[AttemptView] = (),
        on_attempt: AttemptCallback | None = None,
    ) -> JobResult:
        """Attempts until success or a give-up; numbers continue after ``previous``."""
        ...
