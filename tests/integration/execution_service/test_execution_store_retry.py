"""A worker rides out a short database outage while it holds the lease.

Before, a TRANSIENT database error (the engine pool's checkout timeout under
load, a busy database, a dropped connection) ended the run, and the execution
waited a whole lease before anyone resumed it. Now the run retries the write
with a short backoff, fenced on the lease as every write is.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from execution_support import S, final_state, submit
from marketplace_common.errors import UnavailableError

LONG_LEASE = {"lease_seconds": 30.0, "heartbeat_seconds": 5.0}


def outage(
    fn: Callable[..., Awaitable[Any]], failures: int, *, after_commit: bool = False
) -> tuple[Callable[..., Awaitable[Any]], list[int]]:
    """``fn`` whose first ``failures`` calls raise UnavailableError (after running
    ``fn`` when ``after_commit``: the commit landed, the reply was lost)."""
    calls = [0]

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] <= failures:
            if after_commit:
                await fn(*args, **kwargs)
            raise UnavailableError("no pooled connection in time", reason="DATABASE_UNAVAILABLE")
        return await fn(*args, **kwargs)

    return flaky, calls


async def test_transient_store_errors_are_retried_without_waiting_for_the_lease(
    start_execution: Any, fake_bids: Any, monkeypatch: Any
) -> None:
    bids, _ = fake_bids
    server, stub = await start_execution(**LONG_LEASE)
    store = server.pool._ctx.store
    for name in ("set_status", "add_attempt", "decide", "finish"):  # get serves the API too
        flaky, _ = outage(getattr(store, name), 2)
        monkeypatch.setattr(store, name, flaky)
    task_id = bids.add_task()
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        execution = await submit(stub, task_id)
        final = await final_state(stub, execution.execution_id, seconds=10)
    assert final.status == S.EXECUTION_STATUS_SUCCEEDED
    assert time.monotonic() - started < 10  # far less than the 30 s lease
    assert len(final.attempts) == 1
    assert bids.transitions[task_id] == ["StartTask", "CompleteTask"]
    retried = {e["call"] for e in logs if e["event"] == "execution.store_retry"}
    assert retried == {"set_status", "add_attempt", "decide", "finish"}


async def test_attempt_stored_before_a_lost_reply_is_not_stored_twice(
    start_execution: Any, fake_bids: Any, monkeypatch: Any
) -> None:
    bids, _ = fake_bids
    server, stub = await start_execution(**LONG_LEASE)
    store = server.pool._ctx.store
    flaky, calls = outage(store.add_attempt, 1, after_commit=True)
    monkeypatch.setattr(store, "add_attempt", flaky)
    task_id = bids.add_task()
    execution = await submit(stub, task_id)
    final = await final_state(stub, execution.execution_id, seconds=10)
    assert final.status == S.EXECUTION_STATUS_SUCCEEDED
    assert calls[0] == 2
    assert [a.number for a in final.attempts] == [1]
    assert bids.transitions[task_id] == ["StartTask", "CompleteTask"]


async def test_decision_stored_before_a_lost_reply_is_reported_once(
    start_execution: Any, fake_bids: Any, monkeypatch: Any
) -> None:
    bids, _ = fake_bids
    server, stub = await start_execution(**LONG_LEASE)
    store = server.pool._ctx.store
    flaky, calls = outage(store.decide, 1, after_commit=True)
    monkeypatch.setattr(store, "decide", flaky)
    task_id = bids.add_task()
    execution = await submit(stub, task_id)
    final = await final_state(stub, execution.execution_id, seconds=10)
    assert final.status == S.EXECUTION_STATUS_SUCCEEDED
    assert calls[0] == 2  # the retry's fence fails: the run re-reads the decision
    assert bids.transitions[task_id] == ["StartTask", "CompleteTask"]
