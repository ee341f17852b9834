"""The provider-key limiter in memory: even spacing, bursts, tokens, cooldowns, deadlines."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import TYPE_CHECKING

import pytest
from marketplace_execution.domain.limits import (
    CooldownPolicy,
    KeyLimits,
    LimitSettings,
    MemoryLimitState,
    PermitDeadlineError,
    ProviderLimiter,
)
from marketplace_execution.domain.retry_budget import RetryBudget, RetryBudgetConfig

if TYPE_CHECKING:
    from tests.unit.execution.conftest import FakeClock


def _limiter(clock: FakeClock, **limits: object) -> ProviderLimiter:
    settings = LimitSettings(default=KeyLimits(**limits), margin=0.0)  # type: ignore[arg-type]
    state = MemoryLimitState(clock=clock, rng=random.Random(7))
    return ProviderLimiter(state, settings, clock=clock)


async def _granted_at(limiter: ProviderLimiter, clock: FakeClock, n: int) -> list[float]:
    async def one() -> float:
        await limiter.permit("openai", "m", 10, None)
        return float(clock.monotonic())

    return sorted(await asyncio.gather(*(one() for _ in range(n))))


async def test_calls_are_spaced_evenly_at_the_rate(clock: FakeClock) -> None:
    times = await _granted_at(_limiter(clock, requests_per_minute=120), clock, 10)
    assert times == pytest.approx([0.5 * i for i in range(10)])


async def test_a_burst_lets_that_many_extra_calls_go_at_once_then_spaces_them(
    clock: FakeClock,
) -> None:
    times = await _granted_at(_limiter(clock, requests_per_minute=60, burst=2), clock, 6)
    assert times == pytest.approx([0, 0, 0, 1, 2, 3])


async def test_tokens_per_minute_spaces_calls_by_their_estimated_tokens(clock: FakeClock) -> None:
    limiter = _limiter(clock, tokens_per_minute=600)  # 10 tokens a second, capacity 10
    times = []
    for _ in range(3):
        await limiter.permit("openai", "m", 20, None)
        times.append(clock.monotonic())
    # A call may start once the debt before it is down to 10 tokens (1 s): 0, 1, 3.
    assert times == pytest.approx([0.0, 1.0, 3.0])


async def test_reported_usage_replaces_the_estimate(clock: FakeClock) -> None:
    limiter = _limiter(clock, tokens_per_minute=600)
    permit = await limiter.permit("openai", "m", 100, None)
    assert permit.waited == 0.0  # an idle key lets even a large call go at once
    await limiter.settle(permit, "m", 10)  # 90 tokens (9 s) given back
    await limiter.permit("openai", "m", 10, None)
    assert clock.monotonic() == pytest.approx(0.0)
    await limiter.permit("openai", "m", 100, None)  # 2 s owed before it, 1 s tolerated
    assert clock.monotonic() == pytest.approx(1.0)
    await limiter.permit("openai", "m", 10, None)  # waits for the 100 tokens' debt
    assert clock.monotonic() == pytest.approx(11.0)


async def test_a_cooldown_pauses_every_caller_and_voids_earlier_reservations(
    clock: FakeClock,
) -> None:
    limiter = _limiter(clock, requests_per_minute=60)
    await limiter.permit("openai", "m", 1, None)  # t=0; the next slot is t=1
    waiter = asyncio.create_task(limiter.permit("openai", "m", 1, None))
    await asyncio.sleep(0)
    assert await limiter.cool_down("openai:m", 5.0) == pytest.approx(5.0)
    later = asyncio.create_task(limiter.permit("openai", "m", 1, None))
    await asyncio.gather(waiter, later)
    # The waiter woke at 1, saw the cooldown and booked again: both after t=5, 1 s apart.
    assert clock.monotonic() == pytest.approx(6.0)
    other = _limiter(clock)
    assert (await other.state.cooldown("openai:m")).left <= 0


async def test_a_cooldown_without_a_delay_grows_exponentially_capped_and_resets(
    clock: FakeClock,
) -> None:
    limiter = _limiter(clock)
    limiter.settings = LimitSettings(margin=0.0, cooldown=CooldownPolicy(base=1.0, cap=4.0))
    await limiter.permit("openai", "m", 1, None)
    pauses = [await limiter.cool_down("openai:m", None) for _ in range(5)]
    # Each pause is in [cap/2 .. cap] of min(cap, 2**streak) and never shrinks the current one.
    assert 0.5 <= pauses[0] <= 1.0
    assert all(b >= a for a, b in itertools.pairwise(pauses))
    assert pauses[-1] <= 4.0 + 1e-9
    permit = await limiter.permit("openai", "m", 1, None)
    assert permit.streak == 5
    await limiter.settle(permit, "m", None)
    clock.now_s += 10
    assert 0.5 <= await limiter.cool_down("openai:m", None) <= 1.0


async def test_a_permit_past_the_deadline_fails_at_once_with_the_wait(clock: FakeClock) -> None:
    limiter = _limiter(clock, requests_per_minute=6)  # one call every 10 s
    await limiter.permit("openai", "m", 1, None)
    with pytest.raises(PermitDeadlineError) as caught:
        await limiter.permit("openai", "m", 1, clock.monotonic() + 3.0)
    assert caught.value.retry_after == pytest.approx(10.0)
    assert caught.value.reason == "PERMIT_DEADLINE_EXCEEDED"
    assert clock.monotonic() == 0.0


async def test_keys_are_independent(clock: FakeClock) -> None:
    limiter = _limiter(clock, requests_per_minute=60)
    await limiter.permit("openai", "a", 1, None)
    await limiter.permit("openai", "b", 1, None)
    assert clock.monotonic() == 0.0


def test_retry_budget_allows_the_minimum_then_the_ratio_of_calls(clock: FakeClock) -> None:
    budget = RetryBudget(RetryBudgetConfig(ratio=0.2, window=10.0, min_retries=2), clock=clock)
    for _ in range(10):
        budget.record_call("k")
    allowed = 0
    while budget.try_retry("k"):
        budget.record_call("k")
        allowed += 1
    # 2 free, then retries + 1 <= 0.2 * (calls + 1): 2 retries of 12 calls -> the third
    # would be 3 <= 2.6, refused.
    assert allowed == 2
    for _ in range(10):
        budget.record_call("k")
    assert budget.try_retry("k")  # 3 <= 0.2 * 23
    clock.now_s += 11  # the window forgets
    assert budget.try_retry("k")
    error = budget.exhausted("k")
    assert error.reason == "RETRY_BUDGET_EXHAUSTED"
    assert error.error_type.value == "TRANSIENT"
