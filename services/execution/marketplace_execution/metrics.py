"""The execution service's work metrics in Prometheus (the port is
``domain.execution_metrics``, which describes each one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from marketplace_execution.domain.execution_metrics import BIDS_CALLS, FINAL_STATUSES


class PrometheusExecutionMetrics:
    """The queue gauges and work counters, registered in ``registry`` (fresh by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.queue_depth = Gauge(
            "execution_queue_depth",
            "Executions waiting for a worker (active, lease free), read from the database.",
            multiprocess_mode="livemostrecent",
            registry=self.registry,
        )
        self.queue_oldest_age = Gauge(
            "execution_queue_oldest_age_seconds",
            "Seconds the longest-waiting execution has waited for a worker (0: none waits).",
            multiprocess_mode="livemostrecent",
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

    def set_queue(self, depth: int, oldest_age_seconds: float) -> None:
        self.queue_depth.set(depth)
        self.queue_oldest_age.set(oldest_age_seconds)

    def count_finished(self, status: str) -> None:
        self.finished.labels(status).inc()

    def count_lease_lost(self) -> None:
        self.lease_lost.inc()

    def count_takeovers(self, executions: int) -> None:
        self.takeovers.inc(executions)

    def count_bids_call_retry(self, call: str) -> None:
        self.bids_call_retries.labels(call).inc()
