"""Retrying, written once for the whole project, on tenacity.

:func:`retry_call` runs an async callable until it succeeds or a rule says
stop. Its caller gives it:

* a classification (``retry_on``: error -> retry or not). Cancellation and
  other ``BaseException`` that are not ``Exception`` are never retried;
* a stop rule: at most ``attempts`` attempts in all and a ``deadline``
  (seconds from the first attempt): a wait that would not end before the
  deadline is not started, the error is raised now;
* a wait rule, :class:`Backoff`: the delay the failed call's server asked for
  (``AgentError.retry_after``, which the adapters fill from RetryInfo,
  ``grpc-retry-pushback-ms``, ``Retry-After``, ``retry-after-ms``), else a
  full-jitter exponential delay ``uniform(0, min(maximum, base * 2**(n-1)))``
  after the n-th failure. A server-directed delay longer than ``maximum`` is
  either not waited out (the error is raised now, still carrying it) or, with
  ``cap_directed``, shortened to ``maximum``;
* an injectable :class:`Clock` (``monotonic`` and ``sleep``), so tests never
  sleep.

Whatever is raised at the end is the last attempt's own exception, so callers
map it as they would without retries.

The LLM attempt loop, which cannot run on :func:`retry_call` (its module
docstring says why), uses the same wait rule (:meth:`Backoff.plan`,
:meth:`Backoff.allows`) with its :class:`RetryPolicy` budgets. The module is
plain Python (no transport, no database): adapters classify errors, this
module only reads the taxonomy.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from marketplace_common.errors import AgentError

__all__ = [
    "JITTER",
    "Backoff",
    "Clock",
    "DelaySource",
    "RetryPolicy",
    "SystemClock",
    "WaitPlan",
    "backoff_delay",
    "directed_delay",
    "retry_call",
]

T = TypeVar("T")

JITTER = random.Random()
"""The process's shared source of jitter (seeding a new ``random.Random`` reads the
OS's entropy pool: tens of microseconds, too much to pay on every call)."""


class Clock(Protocol):
    """Time as the retry machinery sees it; tests pass a fake that never sleeps.

    A clock may also offer ``now() -> datetime`` (aware, UTC) for the wall-clock
    stamps of attempt records; without it they use the system's time.
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


def directed_delay(exc: BaseException) -> float | None:
    """The delay the failed call's server asked for: ``AgentError.retry_after``, else None."""
    return exc.retry_after if isinstance(exc, AgentError) else None


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Full jitter after the ``attempt``-th (1-based) failure.

    ``uniform(0, min(max_delay, base_delay * 2**(attempt - 1)))``.
    """
    return _jitter(attempt, policy.base_delay, policy.max_delay, rng)


def _jitter(attempt: int, base: float, maximum: float, rng: random.Random) -> float:
    exponent = min(max(attempt - 1, 0), 60)
    return rng.uniform(0.0, min(maximum, base * 2.0**exponent))


@dataclass(frozen=True, slots=True)
class WaitPlan:
    """A retry about to wait: after which attempt, for what error, how long and why."""

    attempt: int
    error: BaseException
    delay: float
    source: DelaySource


@dataclass(frozen=True, slots=True)
class Backoff:
    """The wait rule: the server's delay when it gave one, else full-jitter backoff.

    Attributes:
        base: the first backoff's upper bound (seconds); it doubles per failure.
        maximum: cap on a backoff delay. A longer server-directed delay stops
            the retries (the error is raised now) unless ``cap_directed``,
            which shortens it to ``maximum`` instead.
        rng: the jitter's source (seeded in tests).
        directed: reads a server-directed delay off an error.
        cap_directed: see ``maximum``.
    """

    base: float
    maximum: float
    rng: random.Random = JITTER
    directed: Callable[[BaseException], float | None] = directed_delay
    cap_directed: bool = False

    def plan(self, attempt: int, error: BaseException) -> WaitPlan:
        """The wait after the ``attempt``-th failure, ending in ``error``."""
        delay = self.directed(error)
        if delay is None:
            backoff = _jitter(attempt, self.base, self.maximum, self.rng)
            return WaitPlan(attempt, error, backoff, DelaySource.BACKOFF)
        if self.cap_directed:
            delay = min(delay, self.maximum)
        return WaitPlan(attempt, error, delay, DelaySource.SERVER_RETRY_AFTER)

    def allows(self, delay: float, time_left: float | None) -> bool:
        """Whether a planned delay is waited out: not a server-directed delay past
        ``maximum`` (unless ``cap_directed``), and over before the deadline
        (``time_left`` seconds away; None for no deadline)."""
        if delay > self.maximum and not self.cap_directed:
            return False
        return time_left is None or delay < time_left


async def retry_call(
    fn: Callable[[], Awaitable[T]],
    *,
    retry_on: Callable[[BaseException], bool],
    wait: Backoff,
    attempts: int | None = None,
    deadline: float | None = None,
    clock: Clock | None = None,
    before_wait: Callable[[WaitPlan], None] | None = None,
) -> T:
    """``await fn()`` until it succeeds or the rules say stop (see the module docstring).

    Args:
        fn: the call; run again from scratch on each attempt.
        retry_on: True when an error may go away on retry.
        wait: the wait rule.
        attempts: attempts in all (1 = no retry); None for no limit.
        deadline: seconds from the first attempt; None for no limit.
        clock: time and sleep (the system's by default).
        before_wait: told of each wait before it starts (for logs and records).
    """
    if attempts is not None and attempts < 1:
        raise ValueError("attempts must be at least 1")
    clock = clock or SystemClock()
    started = clock.monotonic()
    # The fast path: the first attempt runs bare. Building tenacity's machinery costs
    # about as much as a database round trip, so it is built only after a first
    # retryable failure, which it then treats as its own first attempt.
    first_error: BaseException | None = None
    try:
        return await fn()
    except Exception as exc:
        if not retry_on(exc):
            raise
        first_error = exc
    plans: dict[int, WaitPlan] = {}

    def plan(state: RetryCallState) -> float:
        assert state.outcome is not None
        error = state.outcome.exception()
        assert error is not None
        plans[state.attempt_number] = wait.plan(state.attempt_number, error)
        return plans[state.attempt_number].delay

    def stop(state: RetryCallState) -> bool:
        if attempts is not None and state.attempt_number >= attempts:
            return True
        time_left = None if deadline is None else deadline - (clock.monotonic() - started)
        return not wait.allows(plans[state.attempt_number].delay, time_left)

    def announce(state: RetryCallState) -> None:
        if before_wait is not None:
            before_wait(plans[state.attempt_number])

    async def attempt() -> T:
        # tenacity awaits only what it sees is a coroutine function
        nonlocal first_error
        if first_error is not None:
            error, first_error = first_error, None
            raise error  # the failure of the bare first attempt, as tenacity's first
        return await fn()

    retrying = AsyncRetrying(
        sleep=clock.sleep,
        retry=retry_if_exception(lambda e: isinstance(e, Exception) and retry_on(e)),
        wait=plan,
        stop=stop,
        before_sleep=announce,
        reraise=True,
    )
    return await retrying(attempt)


# --- what the LLM attempt loop shares ----------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Budgets and delays (seconds) of the LLM attempt loop.

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
