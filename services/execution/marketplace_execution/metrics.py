"""Every execution metric in Prometheus: the work and the LLM calls (the ports are
``domain.metrics``, which describes each one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from marketplace_execution.domain.metrics import BIDS_CALLS, FINAL_STATUSES

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_WAIT_BUCKETS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_KEY = ("provider", "model")


class PrometheusExecutionMetrics:
    """``ExecutionMetrics`` and ``LLMMetrics``, registered in ``registry`` (fresh by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.queue_depth = Gauge(
            "execution_queue_depth",
            "Executions waiting for a worker (active, lease free), read from the database.",
            multiprocess_mode="livemostrecent",  # serve --workers: one series
            registry=r,
        )
        self.queue_oldest_age = Gauge(
            "execution_queue_oldest_age_seconds",
            "Seconds the longest-waiting execution has waited for a worker (0: none waits).",
            multiprocess_mode="livemostrecent",  # serve --workers: one series
            registry=r,
        )
        self.finished = Counter(
            "executions_finished_total",
            "Executions whose run ended here, by final status.",
            ("status",),
            registry=r,
        )
        self.lease_lost = Counter(
            "execution_lease_lost_total",
            "Runs stopped because another worker took over their lease.",
            registry=r,
        )
        self.takeovers = Counter(
            "execution_takeovers_total",
            "Executions claimed from another worker whose lease had expired.",
            registry=r,
        )
        self.bids_call_retries = Counter(
            "execution_bids_call_retries_total",
            "Calls to BidService retried after a transient failure, by call.",
            ("call",),
            registry=r,
        )
        # Every series exists from the start (0), so rate() and alerts see it.
        for status in FINAL_STATUSES:
            self.finished.labels(status)
        for call in BIDS_CALLS:
            self.bids_call_retries.labels(call)
        self.attempts = Counter(
            "llm_attempts_total",
            "LLM provider calls made by the attempt loop, by provider, error type and outcome.",
            ("provider", "error_type", "outcome"),
            registry=r,
        )
        self.call_seconds = Histogram(
            "llm_call_duration_seconds",
            "Latency of LLM provider calls, by provider and model.",
            _KEY,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.permit_wait = Histogram(
            "llm_permit_wait_seconds",
            "Time waited for a provider key's permit (rate limits, cooldowns) before a call.",
            _KEY,
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "llm_tokens_total",
            "Tokens the provider reported, by model and kind (prompt, completion).",
            ("model", "kind"),
            registry=r,
        )
        self.cost = Counter(
            "llm_cost_usd_total",
            "Cost of the reported tokens at the configured prices, USD, by model.",
            ("model",),
            registry=r,
        )
        self.rate_limited = Counter(
            "llm_rate_limited_total", "HTTP 429 answers received from a provider key.", _KEY,
            registry=r,
        )  # fmt: skip
        self.cooldowns = Counter(
            "llm_cooldowns_total", "Cooldowns started on a provider key (429, 503).", _KEY,
            registry=r,
        )  # fmt: skip
        self.budget_exhausted = Counter(
            "llm_retry_budget_exhausted_total",
            "Retries refused because the provider key's retry budget was spent.",
            _KEY,
            registry=r,
        )
        self.fallbacks = Counter(
            "llm_fallbacks_total",
            "Moves from a model to the next one of its fallback chain.",
            ("provider", "model", "to_model"),
            registry=r,
        )

    # --- ExecutionMetrics ----------------------------------------------------------

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

    # --- LLMMetrics ----------------------------------------------------------------

    def count_attempt(self, provider: str, error_type: str, outcome: str) -> None:
        self.attempts.labels(provider=provider, error_type=error_type, outcome=outcome).inc()

    def observe_call(self, provider: str, model: str, seconds: float) -> None:
        self.call_seconds.labels(provider=provider, model=model).observe(seconds)

    def observe_permit_wait(self, provider: str, model: str, seconds: float) -> None:
        self.permit_wait.labels(provider=provider, model=model).observe(seconds)

    def count_usage(self, model: str, prompt: int, completion: int, cost_usd: float) -> None:
        self.tokens.labels(model=model, kind="prompt").inc(prompt)
        self.tokens.labels(model=model, kind="completion").inc(completion)
        self.cost.labels(model=model).inc(cost_usd)

    def count_rate_limited(self, provider: str, model: str) -> None:
        self.rate_limited.labels(provider=provider, model=model).inc()

    def count_cooldown(self, provider: str, model: str) -> None:
        self.cooldowns.labels(provider=provider, model=model).inc()

    def count_budget_exhausted(self, provider: str, model: str) -> None:
        self.budget_exhausted.labels(provider=provider, model=model).inc()

    def count_fallback(self, provider: str, model: str, to_model: str) -> None:
        self.fallbacks.labels(provider=provider, model=model, to_model=to_model).inc()
