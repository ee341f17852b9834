"""retry_async and its primitives on a fake clock: no test here really sleeps."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio
import httpx2
import openai
import pytest
from marketplace_common.classify import as_agent_error
from marketplace_common.errors import (
    ErrorType,
    FieldViolation,
    LLMFixableError,
    LLMOutputInvalidError,
    NotFoundError,
    RateLimitedError,
    UnavailableError,
)
from marketplace_common.retry import (
    AttemptRecord,
    DelaySource,
    RetryPolicy,
    RetryState,
    SystemClock,
    compute_delay,
    delay_allowed,
    retry_async,
)
from marketplace_common.status import RETRY_PUSHBACK_METADATA_KEY
from structlog.testing import capture_logs


class FakeClock:
    """Monotonic time that only moves when slept on (or advanced by a test)."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


class MaxRng(random.Random):
    """Jitter always at its upper bound, so the exponential curve is visible."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Script:
    """An async callable that plays a list of outcomes (exceptions raise, values return)."""

    def __init__(self, clock: FakeClock, outcomes: Sequence[object], cost: float = 0.0) -> None:
        self.clock = clock
        self.outcomes = list(outcomes)
        self.cost = cost
        self.states: list[RetryState] = []

    async def __call__(self, state: RetryState) -> object:
        self.states.append(state)
        self.clock.t += self.cost
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    @property
    def calls(self) -> int:
        return len(self.states)


POLICY = RetryPolicy(max_attempts=4, max_llm_fixable_attempts=3, base_delay=0.2, max_delay=10)


def down() -> UnavailableError:
    return UnavailableError("dependency down")


def bad_output(field: str = "answer", description: str = "is required") -> LLMFixableError:
    return LLMFixableError("invalid output", violations=[FieldViolation(field, description)])


def status_error(status: int, headers: dict[str, str]) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://llm.test/v1/chat/completions")
    response = httpx2.Response(status, headers=headers, request=request)
    return openai.APIStatusError("rate limited", response=response, body=None)


async def run(
    script: Script,
    policy: RetryPolicy = POLICY,
    *,
    rng: random.Random | None = None,
    idempotent: bool = True,
    records: list[AttemptRecord] | None = None,
) -> Any:
    return await retry_async(
        script,
        policy,
        clock=script.clock,
        rng=rng or MaxRng(),
        idempotent=idempotent,
        on_attempt=None if records is None else records.append,
    )


# --- success and transient retries ---------------------------------------------------


async def test_success_on_first_attempt_does_not_sleep() -> None:
    clock = FakeClock()
    records: list[AttemptRecord] = []
    assert await run(Script(clock, ["ok"]), records=records) == "ok"
    assert clock.sleeps == []
    assert [(r.number, r.error_type, r.code) for r in records] == [(1, None, "OK")]


async def test_transient_error_is_retried_after_backoff() -> None:
    clock = FakeClock()
    records: list[AttemptRecord] = []
    assert await run(Script(clock, [down(), "ok"]), records=records) == "ok"
    assert clock.sleeps == [0.2]
    assert records[0].error_type is ErrorType.TRANSIENT
    assert records[0].code == "UNAVAILABLE"
    assert (records[0].delay, records[0].delay_source) == (0.2, DelaySource.BACKOFF)


async def test_backoff_doubles_up_to_the_cap() -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=6, base_delay=1, max_delay=5, deadline=None)
    script = Script(clock, [down() for _ in range(5)] + ["ok"])
    assert await run(script, policy) == "ok"
    assert clock.sleeps == [1, 2, 4, 5, 5]


async def test_backoff_is_full_jitter() -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=5, base_delay=1, max_delay=100, deadline=None)
    await run(Script(clock, [down() for _ in range(4)] + ["ok"]), policy, rng=random.Random(7))
    expected_rng = random.Random(7)
    assert clock.sleeps == [expected_rng.uniform(0, 2**n) for n in range(4)]


async def test_transient_budget_spent_raises_the_last_error_itself() -> None:
    clock = FakeClock()
    errors = [down() for _ in range(3)]
    script = Script(clock, errors)
    with pytest.raises(UnavailableError) as caught:
        await run(script, RetryPolicy(max_attempts=3, base_delay=1, max_delay=10))
    assert caught.value is errors[-1]
    assert script.calls == 3
    assert clock.sleeps == [1, 2]


# --- server-directed delays ------------------------------------------------------------


async def test_server_directed_delay_wins_over_backoff() -> None:
    clock = FakeClock()
    records: list[AttemptRecord] = []
    await run(Script(clock, [RateLimitedError("slow", retry_after=3), "ok"]), records=records)
    assert clock.sleeps == [3]
    assert records[0].delay_source is DelaySource.SERVER_RETRY_AFTER


async def test_retry_after_ms_header_of_provider_is_honoured() -> None:
    clock = FakeClock()
    await run(Script(clock, [status_error(429, {"retry-after-ms": "1500"}), "ok"]))
    assert clock.sleeps == [1.5]


async def test_grpc_pushback_is_honoured() -> None:
    clock = FakeClock()
    exc = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata((RETRY_PUSHBACK_METADATA_KEY, "500")),
        "down",
        None,
    )
    await run(Script(clock, [exc, "ok"]))
    assert clock.sleeps == [0.5]


async def test_directed_delay_above_cap_fails_now_as_transient_with_that_delay() -> None:
    clock = FakeClock()
    script = Script(clock, [status_error(429, {"retry-after": "60"}), "ok"])
    with pytest.raises(openai.APIStatusError) as caught:
        await run(script, RetryPolicy(max_delay=10, deadline=None))
    assert script.calls == 1
    assert clock.sleeps == []
    err = as_agent_error(caught.value)
    assert err.error_type is ErrorType.TRANSIENT
    assert err.retry_after == 60


async def test_directed_delay_past_the_deadline_fails_now() -> None:
    clock = FakeClock()
    script = Script(clock, [RateLimitedError("slow", retry_after=6), "ok"], cost=1)
    with pytest.raises(RateLimitedError):
        await run(script, RetryPolicy(max_delay=10, deadline=6.5))
    assert script.calls == 1
    assert clock.sleeps == []


async def test_deadline_stops_retries_and_time_left_is_passed_on() -> None:
    clock = FakeClock()
    script = Script(clock, [down() for _ in range(10)], cost=2)
    with pytest.raises(UnavailableError):
        await run(script, RetryPolicy(max_attempts=10, base_delay=1, max_delay=10, deadline=5))
    # attempt 1 ends at 2s, waits 1 -> attempt 2 ends at 5s: a 2s wait does not fit.
    assert script.calls == 2
    assert clock.sleeps == [1]
    assert [s.time_left for s in script.states] == [5, 2]


# --- types that stop at once ---------------------------------------------------------------


@pytest.mark.parametrize("exc", [NotFoundError("gone"), ValueError("bug in our code")])
async def test_permanent_and_fatal_errors_are_not_retried(exc: Exception) -> None:
    clock = FakeClock()
    script = Script(clock, [exc, "ok"])
    with pytest.raises(type(exc)):
        await run(script)
    assert script.calls == 1
    assert clock.sleeps == []


async def test_non_idempotent_call_is_not_retried() -> None:
    clock = FakeClock()
    script = Script(clock, [down(), "ok"])
    with pytest.raises(UnavailableError):
        await run(script, idempotent=False)
    assert script.calls == 1


async def test_cancellation_propagates_without_retry() -> None:
    clock = FakeClock()
    records: list[AttemptRecord] = []
    script = Script(clock, [asyncio.CancelledError(), "ok"])
    with pytest.raises(asyncio.CancelledError):
        await run(script, records=records)
    assert script.calls == 1
    assert records == []


# --- LLM_FIXABLE ------------------------------------------------------------------------------


async def test_llm_fixable_is_re_asked_at_once_with_the_previous_error() -> None:
    clock = FakeClock()
    first = bad_output()
    script = Script(clock, [first, "fixed"])
    assert await run(script) == "fixed"
    assert clock.sleeps == []
    assert script.states[1].previous_error is first


async def test_same_llm_error_twice_in_a_row_becomes_permanent() -> None:
    clock = FakeClock()
    second = bad_output()
    script = Script(clock, [bad_output(), second, "never"])
    with pytest.raises(LLMOutputInvalidError) as caught:
        await run(script)
    assert script.calls == 2
    assert caught.value.error_type is ErrorType.PERMANENT
    assert caught.value.violations == second.violations
    assert caught.value.__cause__ is second


async def test_llm_budget_spent_becomes_permanent() -> None:
    clock = FakeClock()
    outcomes = [bad_output("a"), bad_output("b"), bad_output("c"), "never"]
    script = Script(clock, outcomes)
    with pytest.raises(LLMOutputInvalidError):
        await run(script, RetryPolicy(max_llm_fixable_attempts=3))
    assert script.calls == 3


async def test_llm_and_transient_budgets_are_separate() -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=2, max_llm_fixable_attempts=3, base_delay=1)
    script = Script(clock, [down(), bad_output("a"), bad_output("b"), "ok"])
    assert await run(script, policy) == "ok"
    assert script.calls == 4


async def test_llm_errors_are_in_a_row_only_when_consecutive() -> None:
    clock = FakeClock()
    script = Script(clock, [bad_output(), down(), bad_output(), "ok"])
    assert await run(script, RetryPolicy(max_llm_fixable_attempts=3)) == "ok"


# --- records and logs ----------------------------------------------------------------------------


async def test_async_on_attempt_sees_each_record_before_the_wait() -> None:
    clock = FakeClock()
    seen: list[tuple[int, float, int]] = []

    async def on_attempt(record: AttemptRecord) -> None:
        seen.append((record.number, record.delay, len(clock.sleeps)))

    script = Script(clock, [down(), down(), "ok"])
    await retry_async(script, POLICY, clock=clock, rng=MaxRng(), on_attempt=on_attempt)
    assert seen == [(1, 0.2, 0), (2, 0.4, 1), (3, 0.0, 2)]


async def test_previous_records_reach_the_callable() -> None:
    clock = FakeClock()
    script = Script(clock, [down(), "ok"])
    await run(script)
    assert [r.number for r in script.states[1].attempts] == [1]


async def test_record_message_is_safe() -> None:
    clock = FakeClock()
    records: list[AttemptRecord] = []
    with pytest.raises(ValueError, match="secret"):
        await run(Script(clock, [ValueError("secret=hunter2")]), records=records)
    assert "hunter2" not in records[0].message
    assert records[0].error_type is ErrorType.FATAL


async def test_every_attempt_is_logged_once() -> None:
    clock = FakeClock()
    with capture_logs() as logs:
        await run(Script(clock, [RateLimitedError("slow", retry_after=2), "ok"]))
    attempts = [e for e in logs if e["event"] == "retry.attempt"]
    assert [
        (e["attempt"], e["error_type"], e["code"], e["delay"], e["delay_source"]) for e in attempts
    ] == [
        (1, "TRANSIENT", "RESOURCE_EXHAUSTED", 2, "SERVER_RETRY_AFTER"),
        (2, None, "OK", 0, "NONE"),
    ]


# --- primitives ------------------------------------------------------------------


def test_compute_delay_prefers_server_direction() -> None:
    assert compute_delay(RateLimitedError("x", retry_after=4), 1, POLICY, MaxRng()) == (
        4,
        DelaySource.SERVER_RETRY_AFTER,
    )
    assert compute_delay(down(), 3, POLICY, MaxRng()) == (0.8, DelaySource.BACKOFF)
    assert compute_delay(bad_output(), 1, POLICY, MaxRng()) == (0.0, DelaySource.NONE)


@pytest.mark.parametrize(
    ("delay", "time_left", "allowed"),
    [(10, None, True), (10.5, None, False), (3, 3.5, True), (3, 3, False), (3, -1, False)],
)
def test_delay_allowed_within_cap_and_deadline(
    delay: float, time_left: float | None, allowed: bool
) -> None:
    assert delay_allowed(delay, POLICY, time_left) is allowed


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"max_llm_fixable_attempts": 0}, {"base_delay": -1}, {"deadline": 0}],
)
def test_policy_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


async def test_system_clock_is_monotonic_and_sleeps_asynchronously() -> None:
    clock = SystemClock()
    before = clock.monotonic()
    await clock.sleep(0)
    assert clock.monotonic() >= before
    assert clock.now().tzinfo is not None
