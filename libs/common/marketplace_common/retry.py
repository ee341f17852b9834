"""Smart retries per the retry policy of docs/errors.md, on an injectable clock.

The primitives (``RetryPolicy``, ``compute_delay``, ``delay_allowed``,
``server_directed_delay``, ``AttemptRecord``, ``Clock``) are public so a
caller with its own loop (the execution service's LLM attempts) follows the
same rules; ``retry_async`` is the ready-made loop:

* TRANSIENT errors are retried after a full-jitter exponential delay
  (``uniform(0, min(max_delay, base_delay * 2**n))``), unless the server
  directed a delay, which wins. A delay longer than ``max_delay`` or than the
  time left before ``deadline`` is not waited out: the error is raised now
  (it still carries that delay: ``classify.as_agent_error`` reads it back).
* LLM_FIXABLE errors are re-asked at once on a budget of their own; the
  callable sees the previous error (``RetryState.previous_error``) to feed it
  back. The same error twice in a row, or the budget spent, raises
  ``LLMOutputInvalidError`` (PERMANENT) with the last violations.
* PERMANENT and FATAL errors, and every error of a non-idempotent call, are
  raised at once. Cancellation is never caught.

Whatever is raised at the end is the last attempt's own exception (except the
LLM case above), so callers map it as they would without retries.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar

import structlog

from marketplace_common.classify import as_agent_error, categorize_exception, error_code
from marketplace_common.delays import server_directed_delay
from marketplace_common.errors import AgentError, ErrorType, LLMOutputInvalidError

__all__ = [
    "AttemptRecord",
    "Clock",
    "DelaySource",
    "RetryPolicy",
    "RetryState",
    "SystemClock",
    "backoff_delay",
    "compute_delay",
    "delay_allowed",
    "retry_async",
    "server_directed_delay",
]

T = TypeVar("T")


class Clock(Protocol):
    """Time as the retry machinery sees it; tests pass a fake that never sleeps.

    A clock may also offer ``now() -> datetime`` (aware, UTC) for the wall-clock
    stamps of ``AttemptRecord``; without it they use the system's time.
    """

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` without blocking the event loop."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def now(self) -> datetime:
        return datetime.now(UTC)


class DelaySource(enum.StrEnum):
    """Where a delay came from (execution.proto's RetryDelaySource)."""

    NONE = "NONE"
    BACKOFF = "BACKOFF"
    SERVER_RETRY_AFTER = "SERVER_RETRY_AFTER"
    PACING = "PACING"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Budgets and delays (seconds).

    Attributes:
        max_attempts: attempts that may end in a TRANSIENT error (1 = no retry).
        max_llm_fixable_attempts: attempts that may end in an LLM_FIXABLE error.
        base_delay: backoff base; the n-th retry waits up to ``base_delay * 2**(n-1)``.
        max_delay: cap on a backoff delay; a longer server-directed delay fails fast.
        deadline: time for the whole loop, from its first attempt; None for no limit.
    """

    max_attempts: int = 4
    max_llm_fixable_attempts: int = 3
    base_delay: float = 0.2
    max_delay: float = 10.0
    deadline: float | None = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_llm_fixable_attempts < 1:
            raise ValueError("attempt budgets must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")
        if self.deadline is not None and self.deadline <= 0:
            raise ValueError("deadline must be positive (or None)")


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt: its outcome and the delay chosen after it.

    ``error_type`` is None and ``code`` "OK" on success; ``code`` is otherwise
    ``classify.error_code`` (gRPC code name, HTTP status, SQLSTATE or class
    name) and ``message`` the safe message of ``classify.as_agent_error``.
    ``delay``/``delay_source`` describe the wait before the next attempt
    (0 and NONE when none follows).
    """

    number: int
    error_type: ErrorType | None
    code: str
    message: str
    delay: float
    delay_source: DelaySource
    started_at: datetime
    finished_at: datetime


@dataclass(frozen=True, slots=True)
class RetryState:
    """What ``retry_async`` passes to the callable for each attempt.

    ``number`` is 1-based; ``previous_error`` is the last attempt's exception
    (feed an LLM_FIXABLE one back to the model); ``time_left`` is the
    deadline's remaining seconds (pass it on as a call timeout), None without
    a deadline.
    """

    number: int
    previous_error: BaseException | None
    attempts: tuple[AttemptRecord, ...]
    time_left: float | None


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Full jitter after the ``attempt``-th (1-based) failure.

    ``uniform(0, min(max_delay, base_delay * 2**(attempt - 1)))``.
    """
    exponent = min(max(attempt - 1, 0), 60)
    return rng.uniform(0.0, min(policy.max_delay, policy.base_delay * 2.0**exponent))


def compute_delay(
    exc: BaseException, attempt: int, policy: RetryPolicy, rng: random.Random
) -> tuple[float, DelaySource]:
    """The wait before retrying after ``exc`` ended the ``attempt``-th try.

    A server-directed delay wins over backoff (and is returned uncapped:
    check it with ``delay_allowed``). LLM_FIXABLE errors are re-asked at once.
    """
    if categorize_exception(exc) is ErrorType.LLM_FIXABLE:
        return 0.0, DelaySource.NONE
    directed = server_directed_delay(exc)
    if directed is not None:
        return directed, DelaySource.SERVER_RETRY_AFTER
    return backoff_delay(attempt, policy, rng), DelaySource.BACKOFF


def delay_allowed(delay: float, policy: RetryPolicy, time_left: float | None) -> bool:
    """False when a delay is not worth waiting out: above the cap or not before the deadline."""
    return delay <= policy.max_delay and (time_left is None or delay < time_left)


@dataclass
class _Loop:
    policy: RetryPolicy
    clock: Clock
    rng: random.Random
    idempotent: bool
    started: float = 0.0
    transient_failures: int = 0
    llm_failures: int = 0
    last_llm_signature: object = None
    records: list[AttemptRecord] = field(default_factory=list)

    def time_left(self) -> float | None:
        if self.policy.deadline is None:
            return None
        return self.policy.deadline - (self.clock.monotonic() - self.started)

    def now(self) -> datetime:
        now = getattr(self.clock, "now", None)
        return now() if callable(now) else datetime.now(UTC)

    def next_delay(self, exc: Exception, error_type: ErrorType) -> tuple[float, DelaySource] | None:
        """The wait before the next attempt, or None to raise ``exc`` now."""
        if error_type is not ErrorType.LLM_FIXABLE:
            self.last_llm_signature = None
        if not self.idempotent:
            return None
        if error_type is ErrorType.TRANSIENT:
            self.transient_failures += 1
            if self.transient_failures >= self.policy.max_attempts:
                return None
            delay, source = compute_delay(exc, self.transient_failures, self.policy, self.rng)
            return (delay, source) if delay_allowed(delay, self.policy, self.time_left()) else None
        if error_type is ErrorType.LLM_FIXABLE:
            self.check_llm_budget(exc)
            return 0.0, DelaySource.NONE
        return None

    def check_llm_budget(self, exc: Exception) -> None:
        self.llm_failures += 1
        signature = _signature(exc)
        if signature == self.last_llm_signature:
            why = "the same validation error came twice in a row"
        elif self.llm_failures >= self.policy.max_llm_fixable_attempts:
            why = "the re-ask budget is spent"
        elif (left := self.time_left()) is not None and left <= 0:
            why = "the deadline passed"
        else:
            self.last_llm_signature = signature
            return
        violations = exc.violations if isinstance(exc, AgentError) else ()
        raise LLMOutputInvalidError(
            f"The model's answer failed validation: {why}.", violations=violations
        ) from exc


def _signature(exc: Exception) -> object:
    if isinstance(exc, AgentError):
        return (type(exc), exc.reason, exc.violations or exc.message)
    return (type(exc), str(exc))


async def _report(
    record: AttemptRecord,
    on_attempt: Callable[[AttemptRecord], Awaitable[None] | None] | None,
) -> None:
    # A first attempt that succeeds is the common case: debug, not info.
    log = structlog.get_logger(__name__)
    level = log.debug if record.number == 1 and record.error_type is None else log.info
    level(
        "retry.attempt",
        attempt=record.number,
        error_type=record.error_type.value if record.error_type else None,
        code=record.code,
        delay=round(record.delay, 3),
        delay_source=record.delay_source.value,
    )
    if on_attempt is not None:
        result = on_attempt(record)
        if inspect.isawaitable(result):
            await result


def _failure_record(
    number: int,
    exc: Exception,
    error_type: ErrorType,
    step: tuple[float, DelaySource] | None,
    started_at: datetime,
    finished_at: datetime,
) -> AttemptRecord:
    delay, source = step or (0.0, DelaySource.NONE)
    message = as_agent_error(exc).message
    return AttemptRecord(
        number, error_type, error_code(exc), message, delay, source, started_at, finished_at
    )


async def retry_async(
    fn: Callable[[RetryState], Awaitable[T]],
    policy: RetryPolicy,
    *,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    idempotent: bool = True,
    on_attempt: Callable[[AttemptRecord], Awaitable[None] | None] | None = None,
) -> T:
    """Run ``fn`` until it succeeds or the policy says stop (see the module docstring).

    ``fn`` receives a ``RetryState`` per attempt (``lambda _: call()`` when it
    needs none). ``idempotent=False`` makes exactly one attempt: pass True for
    calls that carry an idempotency key. Every attempt is logged once
    (``retry.attempt``) and given to ``on_attempt`` (sync or async) before
    any wait, so a recorder sees the planned delay.
    """
    loop = _Loop(policy, clock or SystemClock(), rng or random.Random(), idempotent)
    loop.started = loop.clock.monotonic()
    previous: BaseException | None = None
    number = 0
    while True:
        number += 1
        state = RetryState(number, previous, tuple(loop.records), loop.time_left())
        started_at = loop.now()
        try:
            result = await fn(state)
        except Exception as exc:
            error_type = categorize_exception(exc)
            step: tuple[float, DelaySource] | None = None
            try:
                step = loop.next_delay(exc, error_type)
            finally:  # the attempt is recorded even when the LLM budget check raises
                record = _failure_record(number, exc, error_type, step, started_at, loop.now())
                loop.records.append(record)
                await _report(record, on_attempt)
            if step is None:
                exc.add_note(f"retry_async: gave up after {number} attempt(s)")
                raise
            if step[0] > 0:
                await loop.clock.sleep(step[0])
            previous = exc
        else:
            record = AttemptRecord(
                number, None, "OK", "", 0.0, DelaySource.NONE, started_at, loop.now()
            )
            loop.records.append(record)
            await _report(record, on_attempt)
            return result
