"""One claimed execution, from StartTask to the reported outcome.

The outcome is written to the database (``decide``) *before* it is reported to
BidService and the execution turns terminal only *after* (``finish``): a crash in
between replays the report with the same event_id, and a terminal execution
always means BidService knows. Every write is fenced on the run's lease (the
owner and the epoch of its claim).

Every run ends: an unexpected exception while working (a bug, a value the
database refuses) decides FAILED with error type FATAL and a safe message, and
is reported with FailTask, instead of leaving the lease to lapse and the work
(with its paid LLM calls) to be retried by the next claimer forever. Only a
TRANSIENT error (the database is away) lets the lease lapse for a later resume.
Text leaving the loop is made storable (``domain.text``): NULs stripped, an
answer longer than BidService accepts fails PERMANENT rather than being cut
(a cut JSON answer would no longer match its schema). When BidService refuses
CompleteTask for good, the outcome is revised to FAILED and FailTask reports
the reason, so the task never stays PROCESSING.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import structlog
from marketplace_common.errors import AgentError, ErrorType, known_error

from marketplace_execution.domain.errors import LeaseLostError
from marketplace_execution.domain.events import EventBus
from marketplace_execution.domain.metrics import ExecutionMetrics, UncountedMetrics
from marketplace_execution.domain.models import (
    AttemptView,
    Execution,
    ExecutionEvent,
    ExecutionStatus,
    Outcome,
)
from marketplace_execution.domain.ports import (
    BidsGateway,
    ExecutionStore,
    JobRunner,
    JobSpec,
    Lease,
)
from marketplace_execution.domain.reporting import ReportPolicy, call_until_landed, event_id
from marketplace_execution.domain.store_retry import StoreRetryPolicy, until_stored
from marketplace_execution.domain.text import MAX_RESULT_CHARS, report_message, storable

_log = structlog.get_logger(__name__)

T = TypeVar("T")


class StopReason(enum.Enum):
    """Why a running execution's work was interrupted."""

    CANCELLED = "cancelled"  # a caller cancelled it: report and finish
    LEASE_LOST = "lease_lost"  # another worker owns it now: touch nothing


@dataclass(frozen=True, slots=True)
class RunContext:
    """What every run shares."""

    store: ExecutionStore
    bids: BidsGateway
    runner: JobRunner
    bus: EventBus
    owner: str
    now: Callable[[], datetime]
    report_policy: ReportPolicy
    store_retry: StoreRetryPolicy = field(default_factory=StoreRetryPolicy)
    metrics: ExecutionMetrics = field(default_factory=UncountedMetrics)


class ExecutionRun:
    """Drives one execution this worker holds the lease of."""

    def __init__(self, ctx: RunContext, execution: Execution, lease: Lease) -> None:
        self._ctx = ctx
        self._execution = execution
        self._lease = lease
        self._work: asyncio.Task[Execution] | None = None
        self.stop_reason: StopReason | None = None
        self.lease_lost = False
        """True once the run stopped because another worker holds the lease."""
        # StartTask was refused (the task is not ours to fail): finish without FailTask.
        self._start_refused = False

    @property
    def execution_id(self) -> object:
        return self._execution.execution_id

    def interrupt(self, reason: StopReason) -> None:
        """Cancels the LLM work in flight (the report of a cancellation still happens)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if self._work is not None:
            self._work.cancel()

    async def run(self) -> None:
        """Works, decides, reports and finishes; returns quietly when the lease is lost."""
        execution: Execution | None = self._execution
        if self._execution.outcome is None:
            execution = await self._work_until_decided()
        if execution is None:
            return
        if not self._start_refused:
            execution = await self._report(execution)
        await self._finish(execution)

    async def _work_until_decided(self) -> Execution | None:
        self._work = asyncio.create_task(self._work_and_decide())
        try:
            return await self._work
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the pool is stopping this run: not a caller's cancellation
        except LeaseLostError:
            pass
        except AgentError as exc:
            if exc.error_type is ErrorType.TRANSIENT:
                raise  # the database is away: the lease lapses and a worker resumes later
            return await self._decide_after_crash(exc)
        except Exception as exc:
            return await self._decide_after_crash(exc)
        finally:
            self._work = None
        return await self._decided_elsewhere()

    async def _decide_after_crash(self, exc: Exception) -> Execution | None:
        """FAILED for an exception the run did not expect; FATAL unless it is one of ours."""
        eid = str(self._execution.execution_id)
        if isinstance(exc, AgentError):
            error_type, message = exc.error_type, f"the execution failed: {exc.message}"
        else:
            error_type = ErrorType.FATAL
            message = (
                "the execution failed on an internal error of the execution service "
                f"({type(exc).__name__}: {known_error(exc).message})"
            )
        _log.error("execution.run_crashed", execution_id=eid, exc_info=exc)
        reason = exc.reason if isinstance(exc, AgentError) else "INTERNAL"
        outcome = Outcome(ExecutionStatus.FAILED, None, error_type, report_message(message), reason)
        try:
            return await self._decide(outcome)
        except LeaseLostError:
            return await self._decided_elsewhere()

    async def _decided_elsewhere(self) -> Execution | None:
        """After an interruption: the execution if it is still ours and cancelled, else None."""
        if self.stop_reason is StopReason.LEASE_LOST:
            self.lease_lost = True
            return None
        eid = self._execution.execution_id
        execution = await self._stored("get", lambda: self._ctx.store.get(eid))
        held = (execution.lease_owner, execution.lease_epoch) == (
            self._lease.owner,
            self._lease.epoch,
        )
        if not held or execution.outcome is None:
            _log.info("execution.lease_lost", execution_id=str(execution.execution_id))
            self.lease_lost = True
            return None
        return execution

    async def _work_and_decide(self) -> Execution:
        ex = self._execution
        start_error = await call_until_landed(
            lambda: self._ctx.bids.start_task(
                ex.task_id, ex.execution_id, event_id(ex.execution_id, "start")
            ),
            what="StartTask",
            execution_id=ex.execution_id,
            policy=self._ctx.report_policy,
            on_retry=self._ctx.metrics.count_bids_call_retry,
        )
        if start_error is not None:
            self._start_refused = True
            message = f"the task could not be started: {start_error.message}"
            return await self._decide(
                Outcome(
                    ExecutionStatus.FAILED,
                    None,
                    start_error.error_type,
                    message,
                    start_error.reason,
                )
            )
        if ex.status is not ExecutionStatus.RUNNING:
            await self._set_status(ExecutionStatus.RUNNING)
        spec = JobSpec(ex.prompt, ex.model, ex.output_schema, ex.max_attempts)
        result = await self._ctx.runner.run(
            spec, previous=self._execution.attempts, on_attempt=self._on_attempt
        )
        if result.error is None and result.text is not None:
            return await self._decide(_success(result.text))
        error = result.error or AgentError("the attempt loop returned no answer")
        message = report_message(error.message)
        return await self._decide(
            Outcome(ExecutionStatus.FAILED, None, error.error_type, message, error.reason)
        )

    async def _set_status(self, status: ExecutionStatus) -> None:
        previous = self._execution.status
        eid, lease = self._execution.execution_id, self._lease
        self._execution = await self._stored(
            "set_status",
            lambda: self._ctx.store.set_status(
                eid, lease, status, self._ctx.now(), attempts=self._execution.attempts
            ),
        )
        self._publish_status(previous)

    async def _on_attempt(self, attempt: AttemptView, will_retry: bool) -> None:
        attempt = dataclasses.replace(attempt, message=report_message(attempt.message))
        previous = self._execution.status
        if previous is ExecutionStatus.RETRY_SCHEDULED:
            await self._set_status(ExecutionStatus.RUNNING)
            previous = ExecutionStatus.RUNNING
        status = ExecutionStatus.RETRY_SCHEDULED if will_retry else ExecutionStatus.RUNNING
        eid, lease, known = self._execution.execution_id, self._lease, self._execution.attempts
        self._execution = await self._stored(
            "add_attempt",
            lambda: self._ctx.store.add_attempt(
                eid, lease, attempt, status, self._ctx.now(), attempts=known
            ),
        )
        self._ctx.bus.publish(ExecutionEvent(self._execution, attempt=attempt))
        self._publish_status(previous)

    def _publish_status(self, previous: ExecutionStatus) -> None:
        if previous is not self._execution.status:
            change = (previous, self._execution.status)
            self._ctx.bus.publish(ExecutionEvent(self._execution, status_change=change))

    async def _decide(self, outcome: Outcome) -> Execution:
        eid, lease = self._execution.execution_id, self._lease
        self._execution = await self._stored(
            "decide",
            lambda: self._ctx.store.decide(
                eid, lease, outcome, self._ctx.now(), attempts=self._execution.attempts
            ),
        )
        return self._execution

    async def _report(self, execution: Execution) -> Execution:
        """Tells BidService the outcome; returns the execution to finish.

        CompleteTask refused for good revises the outcome to FAILED and reports
        that with FailTask; any other refusal is logged and the run finishes.
        """
        outcome = execution.outcome
        if outcome is None:
            raise AssertionError("report before decide")
        bids, eid, tid = self._ctx.bids, execution.execution_id, execution.task_id
        if outcome.status is ExecutionStatus.SUCCEEDED:
            result = outcome.result or ""
            error = await self._land(
                "CompleteTask",
                lambda: bids.complete_task(tid, eid, event_id(eid, "complete"), result),
            )
            if error is None:
                return execution
            message = report_message(f"BidService refused the result: {error.message}")
            failed = Outcome(
                ExecutionStatus.FAILED, None, ErrorType.PERMANENT, message, error.reason
            )
            lease = self._lease
            execution = await self._stored(
                "revise",
                lambda: self._ctx.store.revise(
                    eid, lease, failed, self._ctx.now(), attempts=execution.attempts
                ),
            )
            outcome = failed
        elif not await self._task_was_started(execution):
            return execution  # cancelled while QUEUED: the task stays PENDING for another try
        error_type = outcome.error_type or ErrorType.PERMANENT
        message = report_message(outcome.error_message or "execution failed")
        error = await self._land(
            "FailTask",
            lambda: bids.fail_task(tid, eid, event_id(eid, "fail"), error_type, message),
        )
        if error is not None:
            _log.warning("execution.report_refused", execution_id=str(eid), reason=error.reason)
        return execution

    async def _task_was_started(self, execution: Execution) -> bool:
        """Whether this execution moved its task to PROCESSING (so FailTask is due).

        Past QUEUED it did. A QUEUED one may have: StartTask lands before the
        status turns RUNNING, so a cancellation (or a crash) in between leaves a
        QUEUED execution with a PROCESSING task. BidService knows for sure.
        """
        if execution.status is not ExecutionStatus.QUEUED:
            return True
        started = False

        async def ask() -> None:
            nonlocal started
            task = await self._ctx.bids.get_task(execution.task_id)
            started = task.status == "PROCESSING" and task.execution_id == str(
                execution.execution_id
            )

        error = await self._land("GetTask", ask)
        return error is None and started

    async def _land(self, what: str, fn: Callable[[], Awaitable[None]]) -> AgentError | None:
        return await call_until_landed(
            fn,
            what=what,
            execution_id=self._execution.execution_id,
            policy=self._ctx.report_policy,
            on_retry=self._ctx.metrics.count_bids_call_retry,
        )

    async def _stored(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """A store call, retried on TRANSIENT database errors (``domain.store_retry``)."""
        return await until_stored(
            fn, what=what, execution_id=self._execution.execution_id, policy=self._ctx.store_retry
        )

    async def _finish(self, execution: Execution) -> None:
        previous = execution.status
        eid, lease = execution.execution_id, self._lease
        self._execution = await self._stored(
            "finish",
            lambda: self._ctx.store.finish(
                eid, lease, self._ctx.now(), attempts=execution.attempts
            ),
        )
        self._publish_status(previous)
        final = self._execution
        self._ctx.metrics.count_finished(final.status.value)
        _log.info(
            "execution.finished",
            execution_id=str(final.execution_id),
            task_id=str(final.task_id),
            status=final.status.value,
            attempts=len(final.attempts),
            error_type=None if final.error_type is None else final.error_type.value,
        )


def _success(text: str) -> Outcome:
    """SUCCEEDED with the answer made storable, or FAILED when BidService could not take it."""
    result = storable(text)
    if len(result) > MAX_RESULT_CHARS:
        message = (
            f"the model's answer has {len(result)} characters; "
            f"BidService accepts a result of at most {MAX_RESULT_CHARS}"
        )
        return Outcome(ExecutionStatus.FAILED, None, ErrorType.PERMANENT, message)
    return Outcome(ExecutionStatus.SUCCEEDED, result=result)
