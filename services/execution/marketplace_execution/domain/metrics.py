"""The execution service's metrics port: what the worker, the attempt loop and the
provider keys count, not where; and the queue monitor that feeds the gauges.

``marketplace_execution.metrics`` exports every one to Prometheus:

The work (``ExecutionMetrics``):

* ``execution_queue_depth``: executions waiting for a worker (active, lease free),
  across every replica: read from the database every ``queue_metrics_seconds`` by
  :class:`QueueMonitor`, so each replica exports the same value (use ``max``).
* ``execution_queue_oldest_age_seconds``: how long the longest-waiting of them has
  waited (since it was submitted, released, or its lease expired); 0 when none waits.
* ``executions_finished_total{status}``: runs that ended, by final status
  (``SUCCEEDED``, ``FAILED``, ``CANCELLED``).
* ``execution_lease_lost_total``: runs this replica stopped because another worker
  took the lease over (this worker's heartbeat lapsed).
* ``execution_takeovers_total``: executions this replica claimed from another worker
  whose lease had expired (a crashed or stalled replica's work resumed).
* ``execution_bids_call_retries_total{call}``: calls to BidService the worker retried
  after a transient failure (``StartTask``, ``CompleteTask``, ``FailTask``, ``GetTask``).

The LLM calls (``LLMMetrics``):

* ``llm_attempts_total{provider, error_type, outcome}``: every provider call the
  attempt loop made. ``provider`` is ``LLMProvider.name``; ``error_type`` ``NONE``
  for a valid answer, else the ErrorType name; ``outcome`` ``succeeded`` (a valid
  answer), ``retried`` (failed, and the loop tries again: a backoff retry or a
  re-ask), ``failed`` (failed, and the run ends with this error) or ``cancelled``
  (the run was cancelled mid-call). So
  ``sum(llm_attempts_total{outcome="failed", error_type="PERMANENT"})`` is the
  calls a blind retry would have repeated and smart retry did not.
* ``llm_call_duration_seconds{provider, model}``: each provider call's latency.
* ``llm_permit_wait_seconds{provider, model}``: the wait for the key's permit
  (its shared rate limits and cooldowns, docs/llm-limits.md) before each call.
* ``llm_tokens_total{model, kind}``: reported tokens, ``kind`` ``prompt`` or
  ``completion``.
* ``llm_cost_usd_total{model}``: what those tokens cost at the configured prices.
* ``llm_rate_limited_total{provider, model}``: 429 answers received.
* ``llm_cooldowns_total{provider, model}``: cooldowns started (429, or 503 with
  Retry-After).
* ``llm_retry_budget_exhausted_total{provider, model}``: retries the budget refused.
* ``llm_fallbacks_total{provider, model, to_model}``: moves to the next model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import structlog

from marketplace_execution.domain.ports import ExecutionStore

_log = structlog.get_logger(__name__)

FINAL_STATUSES = ("SUCCEEDED", "FAILED", "CANCELLED")
BIDS_CALLS = ("StartTask", "CompleteTask", "FailTask", "GetTask")
NO_ERROR = "NONE"


class ExecutionMetrics(Protocol):
    """Where the worker and the queue monitor count."""

    def set_queue(self, depth: int, oldest_age_seconds: float) -> None:
        """The queue as read from the database just now."""
        ...

    def count_finished(self, status: str) -> None:
        """One run ended with ``status`` (SUCCEEDED, FAILED, CANCELLED)."""
        ...

    def count_lease_lost(self) -> None:
        """One run stopped because another worker holds its lease."""
        ...

    def count_takeovers(self, executions: int) -> None:
        """A claim took ``executions`` over from expired leases of other workers."""
        ...

    def count_bids_call_retry(self, call: str) -> None:
        """One call to BidService (``call``: StartTask, ...) is retried."""
        ...


class LLMMetrics(Protocol):
    """Where the attempt loop and the provider keys count."""

    def count_attempt(self, provider: str, error_type: str, outcome: str) -> None:
        """Count one provider call."""
        ...

    def observe_call(self, provider: str, model: str, seconds: float) -> None:
        """One provider call's latency."""
        ...

    def observe_permit_wait(self, provider: str, model: str, seconds: float) -> None:
        """The wait for a key's permit before one call."""
        ...

    def count_usage(self, model: str, prompt: int, completion: int, cost_usd: float) -> None:
        """Tokens one call reported, and their cost."""
        ...

    def count_rate_limited(self, provider: str, model: str) -> None:
        """One 429 received."""
        ...

    def count_cooldown(self, provider: str, model: str) -> None:
        """One cooldown started on a key."""
        ...

    def count_budget_exhausted(self, provider: str, model: str) -> None:
        """One retry the key's retry budget refused."""
        ...

    def count_fallback(self, provider: str, model: str, to_model: str) -> None:
        """One move to the next model of a chain."""
        ...


class UncountedMetrics:
    """Counts nothing (both ports): the default when nobody reads the counters."""

    def set_queue(self, depth: int, oldest_age_seconds: float) -> None:
        """Drop the values."""

    def count_finished(self, status: str) -> None:
        """Drop the count."""

    def count_lease_lost(self) -> None:
        """Drop the count."""

    def count_takeovers(self, executions: int) -> None:
        """Drop the count."""

    def count_bids_call_retry(self, call: str) -> None:
        """Drop the count."""

    def count_attempt(self, provider: str, error_type: str, outcome: str) -> None:
        """Drop the count."""

    def observe_call(self, provider: str, model: str, seconds: float) -> None:
        """Drop the observation."""

    def observe_permit_wait(self, provider: str, model: str, seconds: float) -> None:
        """Drop the observation."""

    def count_usage(self, model: str, prompt: int, completion: int, cost_usd: float) -> None:
        """Drop the count."""

    def count_rate_limited(self, provider: str, model: str) -> None:
        """Drop the count."""

    def count_cooldown(self, provider: str, model: str) -> None:
        """Drop the count."""

    def count_budget_exhausted(self, provider: str, model: str) -> None:
        """Drop the count."""

    def count_fallback(self, provider: str, model: str, to_model: str) -> None:
        """Drop the count."""


class QueueMonitor:
    """Sets the queue gauges from the database every ``interval`` seconds."""

    def __init__(
        self,
        store: ExecutionStore,
        metrics: ExecutionMetrics,
        now: Callable[[], datetime],
        interval: float,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._now = now
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Read the queue once and set the gauges (a failure keeps the last values)."""
        now = self._now()
        stats = await self._store.queue_stats(now)
        waiting_since = stats.oldest_waiting_since
        age = 0.0 if waiting_since is None else max((now - waiting_since).total_seconds(), 0.0)
        self._metrics.set_queue(stats.depth, age)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="execution-queue-metrics")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:
                _log.warning("execution.queue_metrics_failed", error=type(exc).__name__)
            await asyncio.sleep(self._interval)
