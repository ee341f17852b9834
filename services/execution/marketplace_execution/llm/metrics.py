"""The LLM metrics in Prometheus (the port is ``domain.llm_metrics``).

* ``llm_attempts_total{provider, error_type, outcome}``: every provider call the
  attempt loop made (labels described in ``domain.llm_metrics``). So
  ``sum(llm_attempts_total{outcome="failed", error_type="PERMANENT"})`` is the
  calls a blind retry would have repeated and smart retry did not.
* ``llm_call_duration_seconds{provider, model}``: each provider call's latency.
* ``llm_permit_wait_seconds{provider, model}``: the wait for the key's permit
  (its shared rate limits and cooldowns) before each call.
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

from prometheus_client import CollectorRegistry, Counter, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_WAIT_BUCKETS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_KEY = ("provider", "model")


class PrometheusLLMMetrics:
    """The LLM counters and histograms, registered in ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
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
