"""Prometheus metrics of the execution service's work (next to ``llm_metrics``).

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
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from marketplace_execution.domain.ports import ExecutionStore

_log = structlog.get_logger(__name__)

FINAL_STATUSES = ("SUCCEEDED", "FAILED", "CANCELLED")
BIDS_CALLS = ("StartTask", "CompleteTask", "FailTask", "GetTask")


class ExecutionMetrics:
    """The execution counters and queue gauges, in ``registry`` (fresh by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.queue_depth = Gauge(
            "execution_queue_depth",
            "Executions waiting for a worker (active, lease free), read from the database.",
            registry=self.registry,
        )
        self.queue_oldest_age = Gauge(
            "execution_queue_oldest_age_seconds",
            "Seconds the longest-waiting execution has waited for a worker (0: none waits).",
            registry=self.registry,
        )
        self.finished = Counter(
            "executions_finished_total",
            "Executions whose run ended here, by final status.",
            ("status",),
            registry=self.registry,
        )
        self.lease_lost = Counter(
            "execution_lease_lost_total",
            "Runs stopped because another worker took over their lease.",
            registry=self.registry,
        )
        self.takeovers = Counter(
            "execution_takeovers_total",
            "Executions claimed from another worker whose lease had expired.",
            registry=self.registry,
        )
        self.bids_call_retries = Counter(
            "execution_bids_call_retries_total",
            "Calls to BidService retried after a transient failure, by call.",
            ("call",),
            registry=self.registry,
        )
        # Every series exists from the start (0), so rate() and alerts see it.
        for status in FINAL_STATUSES:
            self.finished.labels(status)
        for call in BIDS_CALLS:
            self.bids_call_retries.labels(call)

    def count_finished(self, status: str) -> None:
        self.finished.labels(status).inc()

    def count_bids_call_retry(self, call: str) -> None:
        self.bids_call_retries.labels(call).inc()


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
        self._metrics.queue_depth.set(stats.depth)
        waiting_since = stats.oldest_waiting_since
        age = 0.0 if waiting_since is None else max((now - waiting_since).total_seconds(), 0.0)
        self._metrics.queue_oldest_age.set(age)

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
