"""What the attempt loop hands out: one ``LLMAttempt`` per provider call, and the
``LLMOutcome`` of a run (``domain.attempt_loop``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from marketplace_common import tracing
from marketplace_common.errors import AgentError, ErrorType
from marketplace_common.retrying import AttemptRecord

from marketplace_execution.domain.llm import LLMUsage


@dataclass(frozen=True, slots=True)
class LLMAttempt:
    """One provider call as the loop saw it.

    Attributes:
        record: the shared ``AttemptRecord``; its ``delay``/``delay_source``
            are the wait before the *next* attempt (0 and NONE when none follows).
        pacing_delay: seconds this call waited before it was sent (the pacer's
            pause and concurrency slot, the provider key's permit).
        retry_follows: True when the loop makes another attempt after this one
            (a retry or a re-ask), so the execution is RETRY_SCHEDULED meanwhile.
        model: the model asked (the one that answered when it succeeded).
        usage: the tokens the provider reported, if any.
        cost_nanos: their cost at the configured prices, nano-USD.
    """

    record: AttemptRecord
    pacing_delay: float
    retry_follows: bool
    model: str = ""
    usage: LLMUsage | None = None
    cost_nanos: int = 0

    @property
    def number(self) -> int:
        return self.record.number

    @property
    def error_type(self) -> ErrorType | None:
        return self.record.error_type


OnAttempt = Callable[[LLMAttempt], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class LLMOutcome:
    """How a run ended.

    Attributes:
        text: the valid answer (JSON text when the request had an output_schema).
        model: the model that answered.
        attempts: this run's attempts, oldest first.
        error: why the run failed; None on success.
        value: the parsed answer when the request had an output_schema.
        usage: token usage of the successful call, if the provider reported it.
    """

    text: str | None
    model: str | None
    attempts: list[LLMAttempt]
    error: AgentError | None
    value: Any = None
    usage: LLMUsage | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None

    @property
    def records(self) -> list[AttemptRecord]:
        """The attempts' shared records, oldest first."""
        return [attempt.record for attempt in self.attempts]


def trace_attempt(provider: str, attempt: LLMAttempt, outcome: str, error_type: str) -> None:
    """One ``llm.attempt`` span (a child of the run's span) when tracing is on."""
    if not tracing.enabled():
        return
    record = attempt.record
    attributes = {
        "llm.provider": provider,
        "llm.model": attempt.model,
        "llm.attempt": record.number,
        "llm.outcome": outcome,
        "llm.error_type": error_type,
        "llm.code": record.code,
        "llm.delay_seconds": record.delay,
        "llm.delay_source": record.delay_source.value,
        "llm.pacing_delay_seconds": attempt.pacing_delay,
    }
    error = None if record.error_type is None else f"{error_type}: {record.code}"
    started, finished = record.started_at, record.finished_at
    tracing.record_span("llm.attempt", started, finished, attributes, error=error)
