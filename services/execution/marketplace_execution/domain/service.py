"""The ExecutionService use cases, independent of gRPC and of the database."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

import structlog
from marketplace_common.auth import Principal
from marketplace_common.errors import (
    AgentError,
    FieldViolation,
    InvalidArgumentError,
    UnavailableError,
)
from marketplace_common.paging import PageCursor, decode_page_token, filters_digest, next_page

from marketplace_execution.domain import access
from marketplace_execution.domain.errors import TaskNotPendingError
from marketplace_execution.domain.events import EventBus
from marketplace_execution.domain.models import (
    CallOrigin,
    Execution,
    ExecutionEvent,
    NewExecution,
    Usage,
)
from marketplace_execution.domain.ports import (
    BidsGateway,
    ExecutionStore,
    JobResult,
    JobRunner,
    JobSpec,
)
from marketplace_execution.domain.quota import CompleteQuota
from marketplace_execution.domain.requests import (
    CompleteRequest,
    ListRequest,
    SubmitRequest,
    submit_key,
)
from marketplace_execution.domain.text import storable

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Defaults and timings of the use cases."""

    default_model: str
    watch_poll_seconds: float = 1.0
    cancel_wait_seconds: float = 5.0
    allowed_models: frozenset[str] = frozenset()
    """Models a caller may name besides ``default_model`` (empty: only that one)."""

    def check_model(self, model: str) -> None:
        """INVALID_ARGUMENT on ``model`` unless it is empty (the default) or allowed."""
        if not model or model == self.default_model or model in self.allowed_models:
            return
        allowed = ", ".join(sorted({self.default_model, *self.allowed_models}))
        raise InvalidArgumentError(
            "invalid request: model",
            violations=[FieldViolation("model", f"not an allowed model (allowed: {allowed})")],
        )


@dataclass(frozen=True, slots=True)
class Page:
    """One page of ListExecutions."""

    executions: list[Execution]
    next_page_token: str


class ExecutionService:
    """Submit, read, watch, cancel and run LLM work.

    ``wake`` asks the worker pool to claim now; ``cancel_local`` interrupts a
    run this process holds (both are no-ops in a process without workers).
    """

    def __init__(
        self,
        *,
        store: ExecutionStore,
        bids: BidsGateway,
        runner: JobRunner,
        bus: EventBus,
        config: ServiceConfig,
        now: Callable[[], datetime],
        wake: Callable[[], None] = lambda: None,
        cancel_local: Callable[[uuid.UUID], object] = lambda _id: None,
        quota: CompleteQuota | None = None,
    ) -> None:
        self._store = store
        self._bids = bids
        self._runner = runner
        self._bus = bus
        self._config = config
        self._now = now
        self._wake = wake
        self._cancel_local = cancel_local
        self._quota = quota
        self._closing = False

    def close_watches(self) -> None:
        """End every open watch (the server is stopping): each ends with
        UNAVAILABLE and a retry delay, so its client watches again on a replica
        that is not going away, instead of holding this one's grace period."""
        self._closing = True

    async def submit(
        self, principal: Principal, request: SubmitRequest, origin: CallOrigin | None = None
    ) -> Execution:
        """Checks the task with BidService and stores the execution QUEUED (idempotent).

        Idempotent on request_id through the kit's keys (``submit_key``): the
        key's answer is the execution's id, so a repeat gets back the resource
        the first call created, as it is now (its current status and attempts).
        The caller is part of the fingerprint: a request_id first used by another
        principal is IDEMPOTENCY_KEY_REUSED, never a replay of its answer.
        Ownership is checked before the task's status, so a stranger learns nothing.
        ``origin`` (the call's trace context and request id) is stored with it.
        """
        access.require_submitter_role(principal)
        self._config.check_model(request.model)
        actor = access.actor_name(principal)
        fingerprint = request.fingerprint(actor)
        existing = await self._store.replay(submit_key(request.request_id, fingerprint))
        if existing is not None:
            return existing
        task = await self._bids.get_task(request.task_id)
        access.check_can_submit(principal, task)
        if task.status != "PENDING":
            raise TaskNotPendingError(task.task_id, task.status)
        prompt = request.prompt or storable(f"{task.title}\n\n{task.description}".strip())
        execution = await self._store.create(
            NewExecution(
                execution_id=uuid.uuid4(),
                task_id=request.task_id,
                request_id=request.request_id,
                request_fingerprint=fingerprint,
                prompt=prompt,
                model=request.model or self._config.default_model,
                output_schema=request.output_schema,
                max_attempts=request.attempts_budget,
                created_at=self._now(),
                client_email=access.normalized_email(task.client_email) or None,
                agent_id=task.agent_id or None,
                submitted_by=actor,
                origin=origin,
            )
        )
        _log.info(
            "execution.submitted",
            execution_id=str(execution.execution_id),
            task_id=str(execution.task_id),
        )
        self._wake()
        return execution

    async def get(self, principal: Principal, execution_id: uuid.UUID) -> Execution:
        """One execution with its attempts (its owners and admin; NOT_FOUND for anyone else)."""
        execution = await self._store.get(execution_id)
        access.check_can_see(principal, execution)
        return execution

    async def list(self, principal: Principal, request: ListRequest) -> Page:
        """A page of the caller's executions, newest first (AIP-158 keyset pagination)."""
        scope = access.list_scope(principal)
        # Positional keys, as earlier versions issued them: their tokens stay valid.
        filters = filters_digest(
            "executions",
            {
                "0": request.task_id,
                "1": request.status,
                "2": None if scope is None else scope.key(),
            },
        )
        after = decode_page_token(request.page_token, filters)
        rows = list(
            await self._store.list_page(
                task_id=request.task_id,
                status=request.status,
                after=after,
                limit=request.limit + 1,
                owner=scope,
            )
        )
        items, token = next_page(
            rows, request.limit, filters, lambda e: PageCursor(e.created_at, e.execution_id)
        )
        return Page(items, token)

    async def cancel(self, principal: Principal, execution_id: uuid.UUID) -> Execution:
        """Decides CANCELLED, interrupts the run, and waits a little for the task to be failed.

        Returns the execution as it is then: CANCELLED, or still active with
        the cancellation pending when BidService is slow to answer. Owners and
        admin only (the owners never change, so checking first is race-free).
        """
        access.check_can_see(principal, await self._store.get(execution_id))
        with self._bus.subscribe(execution_id) as events:
            execution = await self._store.request_cancel(execution_id, self._now())
            _log.info("execution.cancel_requested", execution_id=str(execution_id))
            self._cancel_local(execution_id)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._config.cancel_wait_seconds):
                    while not execution.terminal:
                        execution = await self._next_state(execution_id, events)
        return execution

    async def _next_state(
        self, execution_id: uuid.UUID, events: asyncio.Queue[ExecutionEvent]
    ) -> Execution:
        try:
            async with asyncio.timeout(self._config.watch_poll_seconds):
                return (await events.get()).execution
        except TimeoutError:
            return await self._store.get(execution_id)

    async def watch(
        self, principal: Principal, execution_id: uuid.UUID
    ) -> AsyncIterator[ExecutionEvent]:
        """The current state, then each attempt and status change, until a terminal state.

        Events of this process arrive at once; changes made by another replica
        are found by polling every ``watch_poll_seconds``. When the server stops
        (``close_watches``), the stream ends within that interval with
        UNAVAILABLE, so the client watches again elsewhere. Owners and admin only.
        """
        with self._bus.subscribe(execution_id) as events:
            current = await self._store.get(execution_id)
            access.check_can_see(principal, current)
            yield ExecutionEvent(current, status_change=(None, current.status))
            seen_status, seen_attempts = current.status, len(current.attempts)
            while not seen_status.terminal:
                if self._closing:
                    raise UnavailableError(
                        "the server is shutting down: watch the execution again",
                        retry_after=1.0,
                    )
                try:
                    async with asyncio.timeout(self._config.watch_poll_seconds):
                        news = [await events.get()]
                except TimeoutError:
                    news = _diff(await self._store.get(execution_id), seen_status, seen_attempts)
                for event in news:
                    if event.attempt is not None and event.attempt.number > seen_attempts:
                        seen_attempts = event.attempt.number
                        yield event
                    elif event.status_change is not None and event.execution.status != seen_status:
                        yield ExecutionEvent(
                            event.execution, status_change=(seen_status, event.execution.status)
                        )
                        seen_status = event.execution.status

    async def complete(
        self, principal: Principal, request: CompleteRequest, time_left: float | None = None
    ) -> JobResult:
        """Runs the attempt loop now and returns its result (errors are in ``error``).

        ``time_left`` is how long the caller still waits: the loop never plans
        past it, so a server-directed delay longer than that fails at once
        (TRANSIENT, with the delay for RetryInfo) instead of outliving the call.
        Agents, services and admin only, within the caller's quota (domain.quota):
        one call is taken before the run, its tokens are charged after it.
        """
        access.require_complete_role(principal)
        self._config.check_model(request.model)
        quota = self._quota if self._quota is not None and self._quota.counts(principal) else None
        actor = access.actor_name(principal)
        if quota is not None:
            await quota.admit(actor)
        spec = JobSpec(
            prompt=request.prompt,
            model=request.model or self._config.default_model,
            output_schema=request.output_schema,
            max_attempts=request.attempts_budget,
            time_left=time_left,
        )
        result = await self._runner.run(spec)
        if quota is not None:
            usage = Usage.total(result.attempts)
            try:
                await quota.charge_tokens(actor, usage.prompt_tokens + usage.completion_tokens)
            except AgentError as exc:
                # The answer is paid for already: give it, and say the count missed it.
                _log.warning("complete.quota_charge_failed", principal=actor, reason=exc.reason)
        return result


def _diff(execution: Execution, status: object, attempts: int) -> list[ExecutionEvent]:
    """The events that lead from what a watcher saw to ``execution`` (found by polling)."""
    news = [ExecutionEvent(execution, attempt=a) for a in execution.attempts if a.number > attempts]
    if execution.status != status:
        news.append(ExecutionEvent(execution, status_change=(None, execution.status)))
    return news
