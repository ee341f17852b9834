"""The worker pool: claims executions durably and runs them, N at a time per process.

* Claiming polls every ``poll_seconds`` and is woken at once by ``wake()`` (a new
  submission or a cancellation in this process).
* One heartbeat loop extends the leases of every execution this pool runs, every
  ``heartbeat_seconds``; it also notices executions cancelled through another
  replica (``cancel_requested``) and leases lost to another worker.
* Neither loop ends on an error: a database error is logged at warning level,
  anything else at error level with its stack, and the loop tries again after
  its interval.
* An execution whose worker died keeps its lease until ``lease_seconds`` pass,
  then any replica claims it and resumes (attempt numbers continue, StartTask and
  the report replay with the same event_ids).
* A run holds the :class:`Lease` of its claim (owner and epoch); the claim skips
  the executions this pool still runs, and the epoch fences out a run whose
  execution was claimed again anyway (its heartbeat failed for a whole lease).
* A run continues its execution's trace (the SubmitExecution call's span is the
  parent of its ``execution.run`` span, so StartTask, the LLM attempts and the
  report are in the trace the client's call started) and carries the submit's
  request id in its log lines and its calls to BidService.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import structlog
from marketplace_common import tracing
from marketplace_common.errors import AgentError
from marketplace_common.rpc_context import bind_request_id, unbind_request_id

from marketplace_execution.domain.errors import LeaseLostError
from marketplace_execution.domain.models import Execution
from marketplace_execution.domain.ports import Lease
from marketplace_execution.domain.run import ExecutionRun, RunContext, StopReason
from marketplace_execution.domain.store_retry import until_stored

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Pool sizing and lease timing (seconds)."""

    concurrency: int = 16
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 5.0
    poll_seconds: float = 1.0
    claim_batch: int = 64
    """Executions one claim takes at most; the claimer claims again at once while
    there is room. Every run claimed starts in the event loop's next turn, so a
    claim of a thousand would stall the loop (and every paced run's timer) for
    that turn."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.claim_batch < 1:
            raise ValueError("claim_batch must be at least 1")
        if not 0 < self.heartbeat_seconds < self.lease_seconds:
            raise ValueError("heartbeat_seconds must be positive and below lease_seconds")
        if self.poll_seconds <= 0:
            raise ValueError("poll_seconds must be positive")


@contextlib.contextmanager
def observed(execution: Execution, owner: str) -> Iterator[None]:
    """The run of ``execution`` as one span of its trace, with its request id bound.

    The span (``execution.run``) is a child of the stored SubmitExecution span: the
    execution is one trace, a resumed run (after a takeover) a second child of the
    same parent. Log lines get ``request_id`` and ``execution_id``; outgoing calls
    carry the request id (``x-request-id``).
    """
    origin = execution.origin
    request_id = None if origin is None else origin.request_id
    fields = {"execution_id": str(execution.execution_id)}
    if request_id is not None:
        fields["request_id"] = request_id
    log_tokens = structlog.contextvars.bind_contextvars(**fields)
    id_token = bind_request_id(request_id)
    attributes = {
        "execution.id": str(execution.execution_id),
        "execution.task_id": str(execution.task_id),
        "execution.lease_owner": owner,
        "execution.resumed": bool(execution.attempts) or execution.status.value != "QUEUED",
    }
    try:
        with tracing.continue_trace(
            None if origin is None else origin.trace_parent, "execution.run", attributes
        ):
            yield
    finally:
        unbind_request_id(id_token)
        with contextlib.suppress(ValueError):
            structlog.contextvars.reset_contextvars(**log_tokens)


def new_owner_id() -> str:
    """A lease owner name unique to this pool: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class WorkerPool:
    """Claims and runs executions until stopped."""

    def __init__(self, ctx: RunContext, config: WorkerConfig) -> None:
        self._ctx = ctx
        self._config = config
        self._runs: dict[uuid.UUID, tuple[ExecutionRun | None, asyncio.Task[None]]] = {}
        self._leases: dict[uuid.UUID, Lease] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self.claimed_total = 0
        """Executions this pool has claimed since it started (a claim is a run)."""

    @property
    def owner(self) -> str:
        """This pool's lease owner name."""
        return self._ctx.owner

    @property
    def running(self) -> frozenset[uuid.UUID]:
        """The executions this pool is working on now."""
        return frozenset(self._runs)

    def start(self) -> None:
        """Starts the claim and heartbeat loops."""
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="execution-claim"),
            asyncio.create_task(self._heartbeat_loop(), name="execution-heartbeat"),
        ]
        _log.info("worker_pool.started", owner=self.owner, concurrency=self._config.concurrency)

    def wake(self) -> None:
        """Claim now rather than at the next poll."""
        self._wake.set()

    def cancel_local(self, execution_id: uuid.UUID) -> bool:
        """Interrupts the execution if this pool runs it (True), else wakes the claimer."""
        entry = self._runs.get(execution_id)
        if entry is None or entry[0] is None:
            self.wake()
            return False
        entry[0].interrupt(StopReason.CANCELLED)
        return True

    def stop_claiming(self) -> None:
        """Claims nothing from now on; running executions go on (first step of a stop).

        A claim already in its transaction hands what it got straight back."""
        self._stopping = True
        self._wake.set()

    async def stop(self, grace: float) -> None:
        """Stops claiming, lets running executions finish for ``grace`` seconds, then
        interrupts the rest and gives their leases back for another replica to resume."""
        self.stop_claiming()
        tasks = [task for _, task in self._runs.values()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        _log.info("worker_pool.stopped", owner=self.owner)

    # --- loops ------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            claimed = await self._claim_once()
            if claimed and len(self._runs) < self._config.concurrency:
                continue  # there may be more waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._config.poll_seconds)

    async def _claim_once(self) -> int:
        free = min(self._config.concurrency - len(self._runs), self._config.claim_batch)
        if free <= 0:
            return 0
        try:
            ids = await self._ctx.store.claim(
                self.owner, free, self._ctx.now(), self._config.lease_seconds, skip=list(self._runs)
            )
            if ids.taken_over:
                self._ctx.metrics.count_takeovers(ids.taken_over)
        except AgentError as exc:
            _log.warning("worker_pool.claim_failed", reason=exc.reason, message=exc.message)
            return 0
        except Exception:
            # A bug must not end the claim loop (a replica that silently takes no
            # work); the loop waits poll_seconds before the next try.
            _log.exception("worker_pool.claim_crashed")
            return 0
        if self._stopping:
            # The stop began during the claim: hand them back untouched at once.
            for execution_id in ids:
                await self._release(execution_id, Lease(self.owner, ids.epochs[execution_id]))
            return 0
        self.claimed_total += len(ids)
        for execution_id in ids:
            lease = Lease(self.owner, ids.epochs[execution_id])
            self._spawn(execution_id, lease, ids.executions.get(execution_id))
        return len(ids)

    def _spawn(
        self, execution_id: uuid.UUID, lease: Lease, claimed: Execution | None = None
    ) -> None:
        task = asyncio.create_task(
            self._process(execution_id, lease, claimed), name=f"execution-{execution_id}"
        )
        self._runs[execution_id] = (None, task)
        self._leases[execution_id] = lease

        def done(_task: asyncio.Task[None]) -> None:
            self._done(execution_id)

        task.add_done_callback(done)

    def _done(self, execution_id: uuid.UUID) -> None:
        self._runs.pop(execution_id, None)
        self._leases.pop(execution_id, None)
        if not self._stopping:
            self._wake.set()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.heartbeat_seconds)
            try:
                await self._heartbeat_once()
            except Exception:
                # A dead heartbeat would let every lease lapse while the runs go on
                # (another replica would run them again): log, and try next beat.
                _log.exception("worker_pool.heartbeat_crashed")

    async def _heartbeat_once(self) -> None:
        epochs = {i: lease.epoch for i, lease in self._leases.items()}
        ids = list(epochs)
        if not ids:
            return
        try:
            renewal = await self._ctx.store.renew(
                self.owner, epochs, self._ctx.now(), self._config.lease_seconds
            )
        except AgentError as exc:
            _log.warning("worker_pool.heartbeat_failed", reason=exc.reason, message=exc.message)
            return
        for execution_id in ids:
            run = self._runs.get(execution_id, (None, None))[0]
            if run is None:
                continue
            if execution_id not in renewal.held:
                run.interrupt(StopReason.LEASE_LOST)
            elif execution_id in renewal.cancel_requested:
                run.interrupt(StopReason.CANCELLED)

    # --- one execution ----------------------------------------------------

    async def _process(
        self, execution_id: uuid.UUID, lease: Lease, claimed: Execution | None = None
    ) -> None:
        """Runs one claimed execution (``claimed``: as the claim returned it, else read)."""
        log = _log.bind(execution_id=str(execution_id), owner=self.owner)
        try:
            execution = claimed
            if execution is None:
                execution = await until_stored(
                    lambda: self._ctx.store.get(execution_id),
                    what="get",
                    execution_id=execution_id,
                    policy=self._ctx.store_retry,
                )
            with observed(execution, self.owner):
                run = ExecutionRun(self._ctx, execution, lease)
                self._runs[execution_id] = (run, self._runs[execution_id][1])
                if execution.cancel_requested:
                    run.interrupt(StopReason.CANCELLED)
                await run.run()
            if run.lease_lost:
                self._ctx.metrics.count_lease_lost()
        except asyncio.CancelledError:
            log.info("execution.released", reason="worker stopping")
            await asyncio.shield(self._release(execution_id, lease))
            raise
        except LeaseLostError:
            log.info("execution.lease_lost")
            self._ctx.metrics.count_lease_lost()
        except AgentError as exc:
            # The database failed us for longer than the store retry budget (a
            # TRANSIENT error: the run decides FAILED on anything else). The lease
            # is not renewed any more, so it expires and this or another replica
            # resumes from the stored state after lease_seconds.
            log.warning("execution.run_failed", reason=exc.reason, message=exc.message)
        except Exception:
            # Only when even deciding FAILED failed: the lease lapses as above.
            log.exception("execution.run_crashed")

    async def _release(self, execution_id: uuid.UUID, lease: Lease) -> None:
        try:
            await self._ctx.store.release(execution_id, lease)
        except AgentError as exc:
            _log.warning("execution.release_failed", reason=exc.reason, message=exc.message)
