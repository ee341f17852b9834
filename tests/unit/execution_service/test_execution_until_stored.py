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


async def test_the_last_transient_error_is_raised_when_the_budget_is_spent() -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    fn = Failing(*(UnavailableError(f"down {i}") for i in range(10)))
    policy = StoreRetryPolicy(base_delay=0.001, max_delay=0.001, budget_seconds=3.0)
    with pytest.raises(UnavailableError):
        await until_stored(fn, what="x", execution_id=EID, policy=policy, monotonic=clock)
    assert fn.calls == 3  # the clock reads 1, 2, 3, 4: spent after the third failure
