"""The attempt loop's metrics port: what it counts, not where the counts go.

``count_attempt(provider, error_type, outcome)`` is called once per provider
call the loop made:

* ``provider``: ``LLMProvider.name`` ("openai", "offline", ...).
* ``error_type``: ``NONE`` for a valid answer, else the ErrorType name
  (``TRANSIENT``, ``PERMANENT``, ``FATAL``, ``LLM_FIXABLE``).
* ``outcome``: ``succeeded`` (a valid answer), ``retried`` (failed, and the
  loop tries again: a backoff retry or a re-ask), ``failed`` (failed, and the
  run ends with this error), ``cancelled`` (the run was cancelled mid-call).

The service counts them in Prometheus (``marketplace_execution.llm.metrics``).
"""

from __future__ import annotations

from typing import Protocol

NO_ERROR = "NONE"


class LLMMetrics(Protocol):
    """Where the attempt loop counts its provider calls."""

    def count_attempt(self, provider: str, error_type: str, outcome: str) -> None:
        """Count one provider call."""
        ...


class UncountedMetrics:
    """Counts nothing: the loop's default when nobody reads its counters."""

    def count_attempt(self, provider: str, error_type: str, outcome: str) -> None:
        """Drop the count."""
