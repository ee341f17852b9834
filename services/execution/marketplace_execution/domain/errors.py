"""The execution service's own errors (reasons are part of the contract)."""

from __future__ import annotations

import uuid

from marketplace_common.errors import (
    AlreadyExistsError,
    ConflictError,
    FailedPreconditionError,
    NotFoundError,
    RateLimitedError,
)


class ExecutionNotFoundError(NotFoundError):
    """No execution has this id."""

    default_reason = "EXECUTION_NOT_FOUND"

    def __init__(self, execution_id: uuid.UUID | str) -> None:
        super().__init__(f"execution {execution_id} not found")
        self.execution_id = str(execution_id)


class TaskNotFoundError(NotFoundError):
    """BidService knows no task with this id."""

    default_reason = "TASK_NOT_FOUND"

    def __init__(self, task_id: uuid.UUID | str) -> None:
        super().__init__(f"task {task_id} not found")
        self.task_id = str(task_id)


class TaskNotPendingError(FailedPreconditionError):
    """The task is not PENDING, so no execution may start on it."""

    default_reason = "TASK_NOT_PENDING"

    def __init__(self, task_id: uuid.UUID | str, status: str) -> None:
        super().__init__(f"task {task_id} is {status}, not PENDING")
        self.task_id = str(task_id)
        self.status = status


class ExecutionAlreadyActiveError(AlreadyExistsError):
    """The task already has a queued or running execution."""

    default_reason = "EXECUTION_ALREADY_ACTIVE"

    def __init__(self, task_id: uuid.UUID | str) -> None:
        super().__init__(f"task {task_id} already has an active execution")
        self.task_id = str(task_id)


class ExecutionNotActiveError(FailedPreconditionError):
    """The execution already finished (or is finishing), so it cannot be cancelled."""

    default_reason = "EXECUTION_NOT_ACTIVE"

    def __init__(self, execution_id: uuid.UUID | str, status: str) -> None:
        super().__init__(f"execution {execution_id} is {status}; only an active one can change")
        self.execution_id = str(execution_id)
        self.status = status


class QuotaExceededError(RateLimitedError):
    """The caller used up its Complete quota (``quota``: calls_per_minute or
    tokens_per_day) until the window ends, ``retry_after`` seconds from now."""

    default_reason = "QUOTA_EXCEEDED"

    def __init__(self, quota: str, limit: int, retry_after: float) -> None:
        super().__init__(
            f"Complete quota used up ({quota}: {limit}); retry in {retry_after:.0f} s",
            retry_after=retry_after,
            metadata={"quota": quota, "limit": str(limit)},
        )
        self.quota = quota


class LeaseLostError(ConflictError):
    """A worker's write was refused: another worker holds the execution now, or it was
    decided (cancelled) meanwhile. The worker stops touching it."""

    default_reason = "LEASE_LOST"

    def __init__(self, execution_id: uuid.UUID | str, owner: str) -> None:
        super().__init__(f"worker {owner} no longer holds execution {execution_id}")
        self.execution_id = str(execution_id)
        self.owner = owner
