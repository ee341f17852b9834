"""Fencing by claim, not by owner name: a run whose execution was claimed again is
refused every write, even when the new claim has the same owner name.

Before the lease epoch, the fence was ``lease_owner`` alone: a pool whose heartbeat
failed for a whole lease (the database away) and whose claim loop came back first
re-claimed an execution it was still running, and both runs wrote (attempts,
outcome, CompleteTask with the first run's answer while the second held the claim).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bids_support import scalar
from execution_support import S, final_state, submit
from marketplace_common.db import create_engine
from marketplace_common.errors import UnavailableError
from marketplace_execution.domain.errors import LeaseLostError
from marketplace_execution.domain.models import AttemptView, ExecutionStatus, Outcome
from marketplace_execution.domain.ports import (
    AttemptCallback,
    JobResult,
    JobSpec,
    Lease,
    LeaseRenewal,
)
from marketplace_execution.storage.store import SqlExecutionStore

LEASE = 30.0
OWNER = "pool-1"


def now() -> datetime:
    return datetime.now(UTC)


def attempt(number: int) -> AttemptView:
    t = now()
    return AttemptView(number=number, started_at=t, finished_at=t)


# --- the store's fence -----------------------------------------------------------


async def test_a_second_claim_by_the_same_owner_fences_out_the_first(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    eid = (await store.create(new_execution())).execution_id
    first = await store.claim(OWNER, 1, now(), LEASE)
    # The first claim's lease lapsed (its heartbeat failed); the same owner claims again.
    second = await store.claim(OWNER, 1, now() + timedelta(seconds=LEASE + 1), LEASE)
    assert (first.epochs, second.epochs) == ({eid: 1}, {eid: 2})
    stale, held = Lease(OWNER, 1), Lease(OWNER, 2)

    with pytest.raises(LeaseLostError):
        await store.set_status(eid, stale, ExecutionStatus.RUNNING, now())
    with pytest.raises(LeaseLostError):
        await store.add_attempt(eid, stale, attempt(1), ExecutionStatus.RUNNING, now())
    with pytest.raises(LeaseLostError):
        await store.decide(eid, stale, Outcome(ExecutionStatus.SUCCEEDED, "stale"), now())
    assert (await store.renew(OWNER, {eid: 1}, now(), LEASE)).held == frozenset()
    await store.release(eid, stale)  # a no-op: the lease stays with the second claim
    assert await store.claim("other", 1, now() + timedelta(seconds=1), LEASE) == []

    untouched = await store.get(eid)
    assert untouched.status is ExecutionStatus.QUEUED
    assert untouched.attempts == ()
    assert untouched.pending_outcome is None
    assert (untouched.lease_owner, untouched.lease_epoch) == (OWNER, 2)

    # The second claim's run writes, and the first is refused even the later steps.
    assert (await store.renew(OWNER, {eid: 2}, now(), LEASE)).held == {eid}
    await store.add_attempt(eid, held, attempt(1), ExecutionStatus.RUNNING, now())
    await store.decide(eid, held, Outcome(ExecutionStatus.SUCCEEDED, "held"), now())
    failed = Outcome(ExecutionStatus.FAILED, None)
    with pytest.raises(LeaseLostError):
        await store.revise(eid, stale, failed, now())
    with pytest.raises(LeaseLostError):
        await store.finish(eid, stale, now())
    finished = await store.finish(eid, held, now())
    assert finished.status is ExecutionStatus.SUCCEEDED
    assert finished.result == "held"
    assert [a.number for a in finished.attempts] == [1]


async def test_claim_skips_the_executions_the_pool_still_runs(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    running = (await store.create(new_execution())).execution_id
    waiting = (await store.create(new_execution())).execution_id
    assert set(await store.claim(OWNER, 10, now(), LEASE)) == {running, waiting}
    await store.release(waiting, Lease(OWNER, 1))
    later = now() + timedelta(seconds=LEASE + 1)  # both leases lapsed by then
    again = await store.claim(OWNER, 10, later, LEASE, skip=[running])
    assert list(again) == [waiting]
    assert again.epochs == {waiting: 2}
    assert (await store.get(running)).lease_epoch == 1


# --- whole runs: the pool, a real store, a fake BidService -------------------------


class GatedRunner:
    """A JobRunner whose runs wait for the test: ``entered`` is set when a run starts,
    ``release`` lets it answer ``text`` after one successful attempt (reported through
    ``on_attempt``, the run's fenced add_attempt)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.runs = 0

    async def run(
        self,
        job: JobSpec,
        *,
        previous: Sequence[AttemptView] = (),
        on_attempt: AttemptCallback | None = None,
    ) -> JobResult:
        self.runs += 1
        self.entered.set()
        await self.release.wait()
        done = attempt(len(previous) + 1)
        if on_attempt is not None:
            await on_attempt(done, False)
        return JobResult(self.text, job.model, attempts=(done,))


async def database_away(
    owner: str, epochs: Any, now: datetime, lease_seconds: float
) -> LeaseRenewal:
    """A heartbeat's renew while the database is away (for this pool only)."""
    raise UnavailableError("database away (injected)")


async def wait_idle(server: Any, seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while server.pool.running:  # noqa: ASYNC110 (the pool's own state)
            await asyncio.sleep(0.02)


async def test_a_run_whose_execution_was_claimed_again_under_its_owner_name_writes_nothing(
    start_execution: Any, fake_bids: Any, db_url: str, monkeypatch: Any
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    # Two pools with one owner name: the name no longer tells the claims apart.
    monkeypatch.setattr("marketplace_execution.server.new_owner_id", lambda: OWNER)
    first_runner = GatedRunner("the first run's answer")
    first, stub = await start_execution(job_runner=first_runner, database_url=db_url)
    monkeypatch.setattr(first.pool._ctx.store, "renew", database_away)
    execution = await submit(stub, task_id)
    await asyncio.wait_for(first_runner.entered.wait(), 10)

    # The first pool's lease lapses (2 s, never renewed); the second pool claims it.
    second_runner = GatedRunner("the second run's answer")
    second, _ = await start_execution(job_runner=second_runner, database_url=db_url)
    await asyncio.wait_for(second_runner.entered.wait(), 15)

    # The first run goes on and is refused its attempt: it stops, nothing changed.
    first_runner.release.set()
    await wait_idle(first)
    meanwhile = await store_view(db_url, execution.execution_id)
    assert meanwhile.attempts == ()
    assert meanwhile.pending_outcome is None
    assert meanwhile.status is ExecutionStatus.RUNNING
    assert (meanwhile.lease_owner, meanwhile.lease_epoch) == (OWNER, 2)
    assert bids.transitions[task_id] == ["StartTask"]
    assert bids.calls["CompleteTask"] == 0

    second_runner.release.set()
    final = await final_state(stub, execution.execution_id)
    assert final.status == S.EXECUTION_STATUS_SUCCEEDED
    assert final.result == "the second run's answer"
    assert [a.number for a in final.attempts] == [1]
    assert bids.transitions[task_id] == ["StartTask", "CompleteTask"]
    assert bids.calls["CompleteTask"] == 1
    assert bids.tasks[task_id].result == "the second run's answer"
    assert (first_runner.runs, second_runner.runs) == (1, 1)
    assert (first.pool.claimed_total, second.pool.claimed_total) == (1, 1)
    attempts = "SELECT count(*) FROM attempts"
    assert await scalar(db_url, attempts) == 1


async def test_a_pool_does_not_claim_again_what_it_still_runs(
    start_execution: Any, fake_bids: Any, db_url: str, monkeypatch: Any
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    runner = GatedRunner("the only answer")
    server, stub = await start_execution(
        job_runner=runner, database_url=db_url, lease_seconds=1.0, heartbeat_seconds=0.5
    )
    monkeypatch.setattr(server.pool._ctx.store, "renew", database_away)
    execution = await submit(stub, task_id)
    await asyncio.wait_for(runner.entered.wait(), 10)
    # The lease lapses while the heartbeat fails; the claim loop polls every 0.1 s.
    await asyncio.sleep(2.0)
    assert runner.runs == 1
    assert server.pool.claimed_total == 1
    assert (await store_view(db_url, execution.execution_id)).lease_epoch == 1

    # The run still holds its claim (nobody claimed since): it finishes normally.
    runner.release.set()
    final = await final_state(stub, execution.execution_id)
    assert final.status == S.EXECUTION_STATUS_SUCCEEDED
    assert final.result == "the only answer"
    assert bids.transitions[task_id] == ["StartTask", "CompleteTask"]


async def store_view(url: str, execution_id: str) -> Any:
    """The stored execution, read through a store of its own."""
    engine = create_engine(url, pool_size=1)
    try:
        return await SqlExecutionStore(engine).get(uuid.UUID(execution_id))
    finally:
        await engine.dispose()
