"""The bids domain's errors, each a kind from the shared taxonomy with its reason.

No transport code here: marketplace_common.status maps the kinds to gRPC codes.

| error | kind (code) | reason |
|---|---|---|
| TaskNotFoundError | NotFound | TASK_NOT_FOUND |
| BidNotFoundError | NotFound | BID_NOT_FOUND |
| DeliveryNotFoundError | NotFound | DELIVERY_NOT_FOUND |
| BidAlreadyActiveError | AlreadyExists | BID_ALREADY_ACTIVE |
| InvalidTransitionError | FailedPrecondition | BID_NOT_PENDING, TASK_NOT_PENDING, |
|  |  | TASK_NOT_PROCESSING |
| ExecutionMismatchError | FailedPrecondition | EXECUTION_MISMATCH |
| TaskNotCompletedError | FailedPrecondition | TASK_NOT_COMPLETED |
| IdempotencyKeyReusedError | InvalidArgument | IDEMPOTENCY_KEY_REUSED |
| InvalidPageTokenError (kit: marketplace_common.paging) | InvalidArgument | INVALID_PAGE_TOKEN |
| NotOwnerError | PermissionDenied | PERMISSION_DENIED |
"""

from __future__ import annotations

from marketplace_common.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    NotFoundError,
    PermissionDeniedError,
)


class TaskNotFoundError(NotFoundError):
    """No task with this id."""

    default_reason = "TASK_NOT_FOUND"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} not found", metadata={"taskId": task_id})
        self.task_id = task_id


class BidNotFoundError(NotFoundError):
    """No bid with this id."""

    default_reason = "BID_NOT_FOUND"

    def __init__(self, bid_id: str) -> None:
        super().__init__(f"bid {bid_id} not found", metadata={"bidId": bid_id})
        self.bid_id = bid_id


class DeliveryNotFoundError(NotFoundError):
    """The delivery token is unknown or expired (deliberately indistinguishable)."""

    default_reason = "DELIVERY_NOT_FOUND"

    def __init__(self) -> None:
        super().__init__("delivery not found: the token is unknown or expired")


class BidAlreadyActiveError(AlreadyExistsError):
    """The agent already has a PENDING bid on this job."""

    default_reason = "BID_ALREADY_ACTIVE"

    def __init__(self, marketplace: str, job_id: str, agent_id: str) -> None:
        super().__init__(
            f"agent {agent_id} already has a pending bid on {marketplace}/{job_id}",
            metadata={"marketplace": marketplace, "jobId": job_id, "agentId": agent_id},
        )
        self.marketplace = marketplace
        self.job_id = job_id
        self.agent_id = agent_id


class InvalidTransitionError(FailedPreconditionError):
    """A state machine transition from a state that does not allow it.

    The reason names the state the operation needs: ``BID_NOT_PENDING`` (withdraw,
    accept, reject on a decided bid), ``TASK_NOT_PENDING`` (start),
    ``TASK_NOT_PROCESSING`` (complete or fail a task that is not running).
    """

    def __init__(self, entity: str, entity_id: str, current: str, target: str, reason: str) -> None:
        super().__init__(
            f"{entity} {entity_id} is {current}; cannot move it to {target}",
            reason=reason,
            metadata={f"{entity}Id": entity_id, "status": current, "targetStatus": target},
        )
        self.entity = entity
        self.entity_id = entity_id
        self.current_status = current
        self.target_status = target


class ExecutionMismatchError(FailedPreconditionError):
    """CompleteTask/FailTask from an execution other than the one that started the task."""

    default_reason = "EXECUTION_MISMATCH"

    def __init__(self, task_id: str, expected: str, got: str) -> None:
        super().__init__(
            f"task {task_id} is being executed by {expected}, not {got}",
            metadata={"taskId": task_id, "executionId": expected},
        )
        self.task_id = task_id
        self.expected_execution_id = expected
        self.execution_id = got


class TaskNotCompletedError(FailedPreconditionError):
    """A delivery token was asked for a task that is not COMPLETED."""

    default_reason = "TASK_NOT_COMPLETED"

    def __init__(self, task_id: str, status: str) -> None:
        super().__init__(
            f"task {task_id} is {status}; only a COMPLETED task can be delivered",
            metadata={"taskId": task_id, "status": status},
        )
        self.task_id = task_id
        self.status = status


class NotOwnerError(PermissionDeniedError):
    """The caller is authenticated but may not act on this resource."""

    def __init__(self, action: str, resource: str) -> None:
        super().__init__(f"not allowed to {action} {resource}")
        self.action = action
        self.resource = resource
