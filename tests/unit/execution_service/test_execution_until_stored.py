"""until_stored: worker writes retried on TRANSIENT database errors, within a budget."""

from __future__ import annotations

import random
import uuid

import pytest
from marketplace_common.errors import ConflictError, InvalidArgumentError, UnavailableError
from marketplace_execution.domain.errors import LeaseLostError
from marketplace_execution.domain.store_retry import StoreRetryPolicy, until_stored

FAST = StoreRetryPolicy(base_delay=0.001, max_delay=0.002, budget_seconds=5.0)
EID = uuid.uuid4()


class MaxRng(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


class Failing:
    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "stored"


async def test_transient_errors_are_retried_until_the_write_lands() -> None:
    fn = Failing(UnavailableError("pool"), ConflictError("busy"))
    result = await until_stored(fn, what="x", execution_id=EID, policy=FAST, rng=random.Random(1))
    assert result == "stored"
    assert fn.calls == 3


async def test_lost_lease_is_not_retried() -> None:
    fn = Failing(LeaseLostError(EID, "me"))
    with pytest.raises(LeaseLostError):
        await until_stored(fn, what="x", execution_id=EID, policy=FAST)
    assert fn.calls == 1


async def test_non_transient_errors_are_not_retried() -> None:
    fn = Failing(InvalidArgumentError("bad"))
    with pytest.raises(InvalidArgumentError):
        await until_stored(fn, what="x", execution_id=EID, policy=FAST)
    assert fn.calls == 1


class TickingClock:
    """Each reading is one second later; sleeping takes no time of its own."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


async def test_the_last_transient_error_is_raised_when_the_budget_is_spent() -> None:
    fn = Failing(*(UnavailableError(f"down {i}") for i in range(10)))
    policy = StoreRetryPolicy(base_delay=0.001, max_delay=0.001, budget_seconds=3.0)
    clock = TickingClock()
    with pytest.raises(UnavailableError, match="down 2"):
        await until_stored(fn, what="x", execution_id=EID, policy=policy, clock=clock)
    assert fn.calls == 3  # the clock reads 1, 2, 3, 4: spent after the third failure
    assert len(clock.sleeps) == 2


async def test_a_wait_past_the_budget_is_not_started() -> None:
    fn = Failing(*(UnavailableError(f"down {i}") for i in range(10)))
    policy = StoreRetryPolicy(base_delay=5.0, max_delay=5.0, budget_seconds=3.0)
    clock = TickingClock()
    with pytest.raises(UnavailableError, match="down 0"):
        await until_stored(fn, what="x", execution_id=EID, policy=policy, clock=clock, rng=MaxRng())
    assert fn.calls == 1
    assert clock.sleeps == []
