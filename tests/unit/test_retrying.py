"""retry_call and the shared retry rules on a fake clock: no test here really sleeps."""

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
    AgentError,
    ErrorType,
    NotFoundError,
    RateLimitedError,
    UnavailableError,
)
from marketplace_common.retrying import (
    Backoff,
    DelaySource,
    RetryPolicy,
    SystemClock,
    WaitPlan,
    retry_call,
)
from marketplace_common.status import RETRY_PUSHBACK_METADATA_KEY


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
        self.calls = 0

    async def __call__(self) -> object:
        self.calls += 1
        self.clock.t += self.cost
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def transient(exc: BaseException) -> bool:
    return isinstance(exc, AgentError) and exc.error_type is ErrorType.TRANSIENT


def down() -> UnavailableError:
    return UnavailableError("dependency down")


def status_error(status: int, headers: dict[str, str]) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://llm.test/v1/chat/completions")
    response = httpx2.Response(status, headers=headers, request=request)
    return openai.APIStatusError("rate limited", response=response, body=None)


async def run(
    script: Script,
    *,
    attempts: int | None = 4,
    deadline: float | None = 30.0,
    base: float = 0.2,
    maximum: float = 10.0,
    rng: random.Random | None = None,
    cap_directed: bool = False,
    plans: list[WaitPlan] | None = None,
) -> Any:
    return await retry_call(
        script,
        retry_on=transient,
        wait=Backoff(base, maximum, rng or MaxRng(), cap_directed=cap_directed),
        attempts=attempts,
        deadline=deadline,
        clock=script.clock,
        before_wait=None if plans is None else plans.append,
    )


# --- success and transient retries ---------------------------------------------------


async def test_success_on_first_attempt_does_not_sleep() -> None:
    clock = FakeClock()
    script = Script(clock, ["ok"])
    assert await run(script) == "ok"
    assert (script.calls, clock.sleeps) == (1, [])


async def test_transient_error_is_retried_after_backoff() -> None:
    clock = FakeClock()
    plans: list[WaitPlan] = []
    first = down()
    assert await run(Script(clock, [first, "ok"]), plans=plans) == "ok"
    assert clock.sleeps == [0.2]
    assert plans == [WaitPlan(1, first, 0.2, DelaySource.BACKOFF)]


async def test_backoff_doubles_up_to_the_cap() -> None:
    clock = FakeClock()
    script = Script(clock, [down() for _ in range(5)] + ["ok"])
    assert await run(script, attempts=6, base=1, maximum=5, deadline=None) == "ok"
    assert clock.sleeps == [1, 2, 4, 5, 5]


async def test_backoff_is_full_jitter() -> None:
    clock = FakeClock()
    script = Script(clock, [down() for _ in range(4)] + ["ok"])
    await run(script, attempts=5, base=1, maximum=100, deadline=None, rng=random.Random(7))
    expected_rng = random.Random(7)
    assert clock.sleeps == [expected_rng.uniform(0, 2**n) for n in range(4)]


async def test_attempt_budget_spent_raises_the_last_error_itself() -> None:
    clock = FakeClock()
    errors = [down() for _ in range(3)]
    script = Script(clock, errors)
    with pytest.raises(UnavailableError) as caught:
        await run(script, attempts=3, base=1, maximum=10)
    assert caught.value is errors[-1]
    assert script.calls == 3
    assert clock.sleeps == [1, 2]


async def test_without_limits_it_retries_until_success() -> None:
    clock = FakeClock()
    script = Script(clock, [down() for _ in range(50)] + ["ok"])
    assert await run(script, attempts=None, deadline=None, base=0.01, maximum=0.01) == "ok"
    assert script.calls == 51


def test_attempts_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="attempts"):
        asyncio.run(run(Script(FakeClock(), ["ok"]), attempts=0))


# --- server-directed delays ------------------------------------------------------------


async def test_server_directed_delay_wins_over_backoff() -> None:
    clock = FakeClock()
    plans: list[WaitPlan] = []
    await run(Script(clock, [RateLimitedError("slow", retry_after=3), "ok"]), plans=plans)
    assert clock.sleeps == [3]
    assert plans[0].source is DelaySource.SERVER_RETRY_AFTER


async def test_retry_after_ms_header_of_a_provider_is_honoured_once_classified() -> None:
    clock = FakeClock()
    classified = as_agent_error(status_error(429, {"retry-after-ms": "1500"}))
    await run(Script(clock, [classified, "ok"]))
    assert clock.sleeps == [1.5]


async def test_grpc_pushback_is_honoured_once_classified() -> None:
    clock = FakeClock()
    exc = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata((RETRY_PUSHBACK_METADATA_KEY, "500")),
        "down",
        None,
    )
    await run(Script(clock, [as_agent_error(exc), "ok"]))
    assert clock.sleeps == [0.5]


async def test_directed_delay_above_cap_fails_now_with_that_delay() -> None:
    clock = FakeClock()
    classified = as_agent_error(status_error(429, {"retry-after": "60"}))
    script = Script(clock, [classified, "ok"])
    with pytest.raises(RateLimitedError) as caught:
        await run(script, maximum=10, deadline=None)
    assert script.calls == 1
    assert clock.sleeps == []
    assert caught.value.error_type is ErrorType.TRANSIENT
    assert caught.value.retry_after == 60


async def test_directed_delay_above_cap_is_shortened_when_asked() -> None:
    clock = FakeClock()
    script = Script(clock, [RateLimitedError("slow", retry_after=60), "ok"])
    assert await run(script, maximum=5, cap_directed=True) == "ok"
    assert clock.sleeps == [5]


async def test_directed_delay_past_the_deadline_fails_now() -> None:
    clock = FakeClock()
    script = Script(clock, [RateLimitedError("slow", retry_after=6), "ok"], cost=1)
    with pytest.raises(RateLimitedError):
        await run(script, maximum=10, deadline=6.5)
    assert script.calls == 1
    assert clock.sleeps == []


async def test_deadline_stops_retries() -> None:
    clock = FakeClock()
    script = Script(clock, [down() for _ in range(10)], cost=2)
    with pytest.raises(UnavailableError):
        await run(script, attempts=10, base=1, maximum=10, deadline=5)
    # attempt 1 ends at 2s, waits 1 -> attempt 2 ends at 5s: a 2s wait does not fit.
    assert script.calls == 2
    assert clock.sleeps == [1]


# --- errors that stop at once ---------------------------------------------------------------


@pytest.mark.parametrize("exc", [NotFoundError("gone"), ValueError("bug in our code")])
async def test_errors_not_classified_retryable_are_raised_at_once(exc: Exception) -> None:
    clock = FakeClock()
    script = Script(clock, [exc, "ok"])
    with pytest.raises(type(exc)) as caught:
        await run(script)
    assert caught.value is exc
    assert script.calls == 1
    assert clock.sleeps == []


async def test_cancellation_propagates_without_retry() -> None:
    clock = FakeClock()
    script = Script(clock, [asyncio.CancelledError(), "ok"])
    with pytest.raises(asyncio.CancelledError):
        await retry_call(
            script, retry_on=lambda _: True, wait=Backoff(0.1, 1.0), clock=clock, attempts=5
        )
    assert script.calls == 1


async def test_a_cancelled_wait_ends_the_retries() -> None:
    script = Script(FakeClock(), [down() for _ in range(5)])
    task = asyncio.create_task(
        retry_call(script, retry_on=transient, wait=Backoff(60.0, 60.0, MaxRng()), attempts=5)
    )
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert script.calls == 1


# --- the rules the LLM attempt loop shares ------------------------------------------------

POLICY = RetryPolicy(max_attempts=4, max_llm_fixable_attempts=3, base_delay=0.2, max_delay=10)


def test_the_wait_plan_prefers_server_direction() -> None:
    wait = Backoff(POLICY.base_delay, POLICY.max_delay, MaxRng())
    server = wait.plan(1, RateLimitedError("x", retry_after=4))
    assert (server.delay, server.source) == (4, DelaySource.SERVER_RETRY_AFTER)
    backoff = wait.plan(3, down())
    assert (backoff.delay, backoff.source) == (0.8, DelaySource.BACKOFF)


@pytest.mark.parametrize(
    ("delay", "time_left", "allowed"),
    [(10, None, True), (10.5, None, False), (3, 3.5, True), (3, 3, False), (3, -1, False)],
)
def test_a_delay_is_allowed_within_cap_and_deadline(
    delay: float, time_left: float | None, allowed: bool
) -> None:
    assert Backoff(POLICY.base_delay, POLICY.max_delay).allows(delay, time_left) is allowed


def test_a_delay_past_the_cap_is_allowed_when_directed_delays_are_capped() -> None:
    wait = Backoff(0.2, 10, cap_directed=True)
    assert wait.allows(30, None)
    assert not wait.allows(30, 5)


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


async def test_a_lambda_returning_an_awaitable_is_awaited() -> None:
    clock = FakeClock()
    script = Script(clock, [down(), "ok"])
    result = await retry_call(
        lambda: script(), retry_on=transient, wait=Backoff(0.1, 1.0), clock=clock, attempts=2
    )
    assert result == "ok"
