"""Tasks: create, read, list, and the execution service's locked transitions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from marketplace_common.auth import Principal, Role
from marketplace_common.clock import utc_now
from marketplace_common.errors import ErrorType
from marketplace_common.logging import get_logger
from marketplace_common.paging import PageCursor, decode_page_token, filters_digest, next_page

from marketplace_bids.domain import access
from marketplace_bids.domain.bid_service import Clock
from marketplace_bids.domain.errors import (
    ExecutionMismatchError,
    InvalidTransitionError,
    TaskNotFoundError,
)
from marketplace_bids.domain.idempotency import (
    CREATE_TASK_SCOPE,
    EVENT_SCOPE,
    IdempotencyKey,
    fingerprint,
    model_codec,
)
from marketplace_bids.domain.models import Page, Task, TaskEvent
from marketplace_bids.domain.ports import Repositories, TaskFilter, UnitOfWork
from marketplace_bids.domain.requests import (
    CompleteTaskRequest,
    CreateTaskRequest,
    FailTaskRequest,
    GetTaskRequest,
    ListTaskEventsRequest,
    ListTasksRequest,
    Request,
    StartTaskRequest,
)
from marketplace_bids.domain.values import TaskStatus

# What each transition needs (docs/design.md: PENDING -> PROCESSING -> COMPLETED |
# FAILED, anything else FAILED_PRECONDITION): the one allowed current status, and
# the reason naming it. A task nobody started cannot fail: an execution cancelled
# before StartTask leaves it PENDING for another execution.
_SOURCES: dict[TaskStatus, tuple[TaskStatus, str]] = {
    TaskStatus.PROCESSING: (TaskStatus.PENDING, "TASK_NOT_PENDING"),
    TaskStatus.COMPLETED: (TaskStatus.PROCESSING, "TASK_NOT_PROCESSING"),
    TaskStatus.FAILED: (TaskStatus.PROCESSING, "TASK_NOT_PROCESSING"),
}


@dataclass(frozen=True, slots=True)
class _Step:
    method: str
    task_id: str
    execution_id: str
    event_id: str
    target: TaskStatus
    request: Request
    result: str | None = None
    error_type: ErrorType | None = None


class TaskService:
    """The task rules; every public method is one transaction."""

    def __init__(self, uow: UnitOfWork, *, clock: Clock = utc_now) -> None:
        self._uow = uow
        self._now = clock
        self._log = get_logger(__name__)

    async def create_task(self, principal: Principal, req: CreateTaskRequest) -> Task:
        """Create a PENDING task directly; a repeat of request_id returns the first result."""
        access.require_client(principal, "create a task", req.client_email)
        fp = fingerprint("CreateTask", principal, req)
        key = IdempotencyKey(CREATE_TASK_SCOPE, req.request_id, fp, model_codec(Task), "request_id")

        async def work(repos: Repositories) -> Task:
            first = await key.replay(repos)
            if first is not None:
                return first
            now = self._now()
            new = Task(
                task_id=str(uuid.uuid4()),
                client_email=req.client_email,
                title=req.title,
                description=req.description,
                budget=req.budget,
                status=TaskStatus.PENDING,
                created_at=now,
                updated_at=now,
            )
            task, created = await key.write_once(repos, new, lambda: repos.tasks.add(new))
            if created:
                self._log.info("task.created", task_id=task.task_id)
            return task

        return await self._uow.run(work)

    async def get_task(self, principal: Principal, req: GetTaskRequest) -> Task:
        """One task, if the caller may see it."""

        async def work(repos: Repositories) -> Task:
            task = await repos.tasks.get(req.task_id)
            if task is None:
                raise TaskNotFoundError(req.task_id)
            access.check_can_see_task(principal, task)
            return task

        return await self._uow.run(work, write=False)

    async def list_tasks(self, principal: Principal, req: ListTasksRequest) -> Page[Task]:
        """Tasks newest first; clients see only their own."""
        filters = TaskFilter(
            client_email=access.task_list_scope(principal, req.client_email),
            status=req.status,
            created_after=req.created_after,
            created_before=req.created_before,
        )
        scope = filters_digest("tasks", {k: getattr(filters, k) for k in filters.__slots__})
        after = decode_page_token(req.page_token, scope)

        async def work(repos: Repositories) -> list[Task]:
            return await repos.tasks.list(filters, after, req.page_size + 1)

        rows = await self._uow.run(work, write=False)
        items, token = next_page(
            rows, req.page_size, scope, lambda t: PageCursor(t.created_at, uuid.UUID(t.task_id))
        )
        return Page(items=items, next_page_token=token)

    async def list_task_events(
        self, principal: Principal, req: ListTaskEventsRequest
    ) -> Page[TaskEvent]:
        """A task's audit trail, oldest first; a task the caller may not see is unknown."""
        scope = filters_digest("task_events", {"task_id": req.task_id})
        after = decode_page_token(req.page_token, scope)

        async def work(repos: Repositories) -> list[TaskEvent]:
            task = await repos.tasks.get(req.task_id)
            if task is None:
                raise TaskNotFoundError(req.task_id)
            access.check_can_see_task(principal, task)
            return await repos.task_events.list(req.task_id, after, req.page_size + 1)

        rows = await self._uow.run(work, write=False)
        items, token = next_page(
            rows, req.page_size, scope, lambda e: PageCursor(e.created_at, uuid.UUID(e.event_id))
        )
        return Page(items=items, next_page_token=token)

    async def start_task(self, principal: Principal, req: StartTaskRequest) -> Task:
        """PENDING -> PROCESSING for an execution."""
        step = _Step(
            "StartTask", req.task_id, req.execution_id, req.event_id, TaskStatus.PROCESSING, req
        )
        return await self._transition(principal, step)

    async def complete_task(self, principal: Principal, req: CompleteTaskRequest) -> Task:
        """PROCESSING -> COMPLETED, by the execution that started the task."""
        step = _Step(
            "CompleteTask",
            req.task_id,
            req.execution_id,
            req.event_id,
            TaskStatus.COMPLETED,
            req,
            result=req.result,
        )
        return await self._transition(principal, step)

    async def fail_task(self, principal: Principal, req: FailTaskRequest) -> Task:
        """PROCESSING -> FAILED, with the final error, by the execution that started the task."""
        step = _Step(
            "FailTask",
            req.task_id,
            req.execution_id,
            req.event_id,
            TaskStatus.FAILED,
            req,
            result=req.message,
            error_type=req.error_type,
        )
        return await self._transition(principal, step)

    async def _transition(self, principal: Principal, step: _Step) -> Task:
        access.check_role(principal, f"call {step.method}", Role.SERVICE)
        fp = fingerprint(step.method, principal, step.request)
        key = IdempotencyKey(EVENT_SCOPE, step.event_id, fp, model_codec(Task), "event_id")

        async def work(repos: Repositories) -> tuple[Task, TaskStatus | None]:
            task = await repos.tasks.get(step.task_id, lock=True)
            if task is None:
                raise TaskNotFoundError(step.task_id)
            first = await key.replay(repos)
            if first is not None:
                return first, None
            _check_transition(task, step)
            updated, event = self._apply(principal, step, task)

            async def write() -> None:
                await repos.tasks.update(updated)
                await repos.task_events.add(event)

            answer, written = await key.write_once(repos, updated, write)
            return answer, task.status if written else None

        task, previous = await self._uow.run(work)
        if previous is not None:
            self._log.info(
                f"task.{step.target.value.lower()}",
                task_id=task.task_id,
                execution_id=step.execution_id,
                event_id=step.event_id,
                previous_status=previous.value,
            )
        return task

    def _apply(self, principal: Principal, step: _Step, task: Task) -> tuple[Task, TaskEvent]:
        now = self._now()
        changes: dict[str, object] = {
            "status": step.target,
            "execution_id": step.execution_id,
            "updated_at": now,
        }
        if step.result is not None:
            changes["result"] = step.result
        if step.error_type is not None:
            changes["error_type"] = step.error_type
        event = TaskEvent(
            event_id=step.event_id,
            task_id=task.task_id,
            previous_status=task.status,
            new_status=step.target,
            execution_id=step.execution_id,
            actor=access.actor_name(principal),
            created_at=now,
        )
        return task.model_copy(update=changes), event


def _check_transition(task: Task, step: _Step) -> None:
    source, reason = _SOURCES[step.target]
    if task.status is not source:
        raise InvalidTransitionError(
            "task", task.task_id, task.status.value, step.target.value, reason
        )
    # Once started, only the execution that started the task may finish it.
    started_by = task.execution_id
    if task.status is TaskStatus.PROCESSING and started_by and started_by != step.execution_id:
        raise ExecutionMismatchError(task.task_id, started_by, step.execution_id)
