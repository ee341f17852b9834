"""Prometheus metrics of the attempt loop.

``llm_attempts_total{provider, error_type, outcome}`` counts every provider
call the loop made:

* ``provider``: ``LLMProvider.name`` ("openai", "offline", ...).
* ``error_type``: ``NONE`` for a valid answer, else the ErrorType name
  (``TRANSIENT``, ``PERMANENT``, ``FATAL``, ``LLM_FIXABLE``).
* ``outcome``: ``succeeded`` (a valid answer), ``retried`` (failed, and the
  loop tries again: a backoff retry or a re-ask), ``failed`` (failed, and the
  run ends with this error), ``cancelled`` (the run was cancelled mid-call).

So ``sum(llm_attempts_total{outcome="failed", error_type="PERMANENT"})`` is
the calls a blind retry would have repeated and smart retry did not.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

NO_ERROR = "NONE"


class LLMMetrics:
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
