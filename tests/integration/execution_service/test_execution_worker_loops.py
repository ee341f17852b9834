"""The worker pool's background loops survive a failure of their own (a bug, not a
database error): each logs it at error level with the stack and carries on."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from execution_support import S, final_state, submit, wait_for_status


def fail_once(fn: Callable[..., Awaitable[Any]]) -> tuple[Callable[..., Awaitable[Any]], list[int]]:
    """``fn`` that raises RuntimeError on its first call; the list counts the calls."""
    calls = [0]

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("injected bug")
        return await fn(*args, **kwargs)

    return flaky, calls


async def test_claim_loop_survives_an_unexpected_error(
    start_execution: Any, fake_bids: Any, monkeypatch: Any
) -> None:
    bids, _ = fake_bids
    server, stub = await start_execution()
    store = server.pool._ctx.store
    flaky, calls = fail_once(store.claim)
    monkeypatch.setattr(store, "claim", flaky)
    with structlog.testing.capture_logs() as logs:
        execution = await submit(stub, bids.add_task())
        final = await final_state(stub, execution.execution_id, seconds=5)
    assert final.status == S.EXECUTION_STATUS_SUCCEEDED
    assert calls[0] >= 2
    crash = [e for e in logs if e["event"] == "worker_pool.claim_crashed"]
    assert crash
    assert crash[0]["log_level"] == "error"
    assert crash[0]["exc_info"]


async def test_heartbeat_loop_survives_an_unexpected_error(
    start_execution: Any, fake_bids: Any, monkeypatch: Any
) -> None:
    bids, _ = fake_bids
    server, stub = await start_execution(llm_offline_latency_seconds=30.0)
    store = server.pool._ctx.store
    flaky, calls = fail_once(store.renew)
    monkeypatch.setattr(store, "renew", flaky)
    execution = await submit(stub, bids.add_task())
    await wait_for_status(stub, execution.execution_id, S.EXECUTION_STATUS_RUNNING)
    await asyncio.sleep(2.0)  # heartbeat every 0.5 s: one failure, then renewals again
    assert calls[0] >= 3


async def test_a_claim_takes_at_most_claim_batch_and_the_claimer_goes_on(
    start_execution: Any, fake_bids: Any, monkeypatch: Any
) -> None:
    bids, _ = fake_bids
    # An API-only server queues the work; the pool starts once it is all there.
    _, api = await start_execution(workers=0)
    executions = [await submit(api, bids.add_task()) for _ in range(7)]
    server, stub = await start_execution(workers=10)
    pool = server.pool
    limits: list[int] = []
    claim = pool._ctx.store.claim

    async def recorded(owner: str, limit: int, *args: Any, **kwargs: Any) -> Any:
        limits.append(limit)
        return await claim(owner, limit, *args, **kwargs)

    monkeypatch.setattr(pool._ctx.store, "claim", recorded)
    monkeypatch.setattr(pool, "_config", dataclasses.replace(pool._config, claim_batch=3))
    pool.wake()
    for execution in executions:
        final = await final_state(stub, execution.execution_id)
        assert final.status == S.EXECUTION_STATUS_SUCCEEDED
    assert limits
    assert max(limits) == 3
    assert pool.claimed_total == 7
