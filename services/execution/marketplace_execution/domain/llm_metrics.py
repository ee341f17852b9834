"""The LLM metrics port: what the attempt loop and the provider keys count, not where.

``count_attempt(provider, error_type, outcome)`` is called once per provider
call the loop made:

* ``provider``: ``LLMProvider.name`` ("openai", "offline", ...).
* ``error_type``: ``NONE`` for a valid answer, else the ErrorType name
  (``TRANSIENT``, ``PERMANENT``, ``FATAL``, ``LLM_FIXABLE``).
* ``outcome``: ``succeeded`` (a valid answer), ``retried`` (failed, and the
  loop tries again: a backoff retry or a re-ask), ``failed`` (failed, and the
  run ends with this error), ``cancelled`` (the run was cancelled mid-call).

The provider keys (``domain.provider_calls``, docs/llm-limits.md) add each
call's latency and permit wait, reported tokens and their cost by model, 429s
received, cooldowns started, retries the budget refused and fallbacks taken.

The service counts them in Prometheus (``marketplace_execution.llm.metrics``).
"""

from __future__ import annotations

from typing import Protocol

NO_ERROR = "NONE"


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
    """Counts nothing: the default when nobody reads the counters."""

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
