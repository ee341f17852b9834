"""The attempt loop's counters in Prometheus (the port is ``domain.llm_metrics``).

``llm_attempts_total{provider, error_type, outcome}`` counts every provider
call the loop made (the labels are described in ``domain.llm_metrics``). So
``sum(llm_attempts_total{outcome="failed", error_type="PERMANENT"})`` is the
calls a blind retry would have repeated and smart retry did not.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class PrometheusLLMMetrics:
    """The attempt-loop counters, registered in ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.attempts = Counter(
            "llm_attempts_total",
            "LLM provider calls made by the attempt loop, by provider, error type and outcome.",
            ("provider", "error_type", "outcome"),
            registry=self.registry,
        )

    def count_attempt(self, provider: str, error_type: str, outcome: str) -> None:
        """Count one provider call."""
        self.attempts.labels(provider=provider, error_type=error_type, outcome=outcome).inc()
