"""Worker writes of many runs share transactions (storage.fenced_writes), each fenced alone.

On SQLite and PostgreSQL: concurrent writes go in few transactions, each row
gets its own values, a write whose lease was taken over gets LeaseLostError
(and stores no attempt) while the rest of its batch commits, and the claim
hands back whole executions so a run needs no read of its own.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from marketplace_common.errors import ErrorType
from marketplace_execution.domain.errors import LeaseLostError
from marketplace_execution.domain.models import AttemptView, ExecutionStatus, Outcome
from marketplace_execution.domain.ports import Lease
from marketplace_execution.storage.fenced_writes import MAX_BATCH
from marketplace_execution.storage.store import SqlExecutionStore

LEASE = 30.0


def _now() -> datetime:
    return datetime.now(UTC)


def _attempt(number: int) -> AttemptView:
    t = _now()
    return AttemptView(number=number, started_at=t, finished_at=t, code="x", message=f"#{number}")


async def _claimed(
    store: SqlExecutionStore, new_execution: Any, count: int
) -> dict[uuid.UUID, Lease]:
    for _ in range(count):
        await store.create(new_execution())
    claimed = await store.claim("pool", count, _now(), LEASE)
    assert len(claimed) == count
    return {i: Lease("pool", claimed.epochs[i]) for i in claimed}


async def test_claim_returns_each_execution_whole(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    created = await store.create(new_execution())
    claimed = await store.claim("pool", 5, _now(), LEASE)
    held = claimed.executions[created.execution_id]
    assert (held.lease_owner, held.lease_epoch) == ("pool", claimed.epochs[created.execution_id])
    assert held.prompt == created.prompt
    assert held == await store.get(created.execution_id)


async def test_concurrent_writes_share_transactions_with_their_own_values(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    leases = await _claimed(store, new_execution, 30)
    before = store._writes.batches
    base = _now()
    stamps = {i: base + timedelta(seconds=n) for n, i in enumerate(leases)}
    written = await asyncio.gather(
        *(
            store.add_attempt(i, lease, _attempt(1), ExecutionStatus.RUNNING, stamps[i])
            for i, lease in leases.items()
        )
    )
    # The first write goes alone; the other 29 queued meanwhile and share one batch.
    assert store._writes.batches - before <= 2
    for execution in written:
        assert execution.status is ExecutionStatus.RUNNING
        assert execution.updated_at == stamps[execution.execution_id]
        assert [a.number for a in execution.attempts] == [1]
        assert execution == await store.get(execution.execution_id)


async def test_a_write_whose_execution_was_claimed_again_fails_alone(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    leases = await _claimed(store, new_execution, 4)
    stale_id = next(iter(leases))
    # Handed back, then taken by another pool: "pool"'s lease of it is stale.
    await store.release(stale_id, leases[stale_id])
    taken = await store.claim("other", 10, _now(), LEASE)
    assert list(taken) == [stale_id]
    results = await asyncio.gather(
        *(
            store.add_attempt(i, lease, _attempt(1), ExecutionStatus.RUNNING, _now())
            for i, lease in leases.items()
        ),
        return_exceptions=True,
    )
    by_id = dict(zip(leases, results, strict=True))
    assert isinstance(by_id.pop(stale_id), LeaseLostError)
    stale = await store.get(stale_id)
    assert (stale.attempts, stale.lease_owner) == ((), "other")
    for i, result in by_id.items():
        assert not isinstance(result, BaseException)
        assert [a.number for a in (await store.get(i)).attempts] == [1]


async def test_one_stale_write_in_a_batch_leaves_the_others_committed(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    leases = await _claimed(store, new_execution, 6)
    stale_id = next(iter(leases))
    stale = Lease("pool", leases[stale_id].epoch - 1)  # an older claim's epoch
    leases[stale_id] = stale
    outcome = Outcome(ExecutionStatus.SUCCEEDED, result="ok")
    results = await asyncio.gather(
        *(
            store.add_attempt(i, lease, _attempt(1), ExecutionStatus.RUNNING, _now())
            for i, lease in leases.items()
        ),
        return_exceptions=True,
    )
    by_id = dict(zip(leases, results, strict=True))
    assert isinstance(by_id.pop(stale_id), LeaseLostError)
    assert (await store.get(stale_id)).attempts == ()
    assert all(not isinstance(r, BaseException) for r in by_id.values())
    decided = await asyncio.gather(
        *(store.decide(i, leases[i], outcome, _now()) for i in by_id),
        store.decide(stale_id, stale, outcome, _now()),
        return_exceptions=True,
    )
    assert isinstance(decided[-1], LeaseLostError)
    assert (await store.get(stale_id)).pending_outcome is None
    for i in by_id:
        stored = await store.get(i)
        assert stored.pending_outcome is ExecutionStatus.SUCCEEDED
        assert [a.number for a in stored.attempts] == [1]


async def test_grouped_writes_keep_the_decide_and_finish_fences(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    leases = await _claimed(store, new_execution, 4)
    ids = list(leases)
    failed = Outcome(ExecutionStatus.FAILED, None, ErrorType.PERMANENT, "no", "WHY")
    # Two decided, two not: in one batch, finish lands only where there is an outcome
    # and decide only where there is none.
    await asyncio.gather(*(store.decide(i, leases[i], failed, _now()) for i in ids[:2]))
    results = await asyncio.gather(
        *(store.finish(i, leases[i], _now()) for i in ids),
        *(store.decide(i, leases[i], failed, _now()) for i in ids),
        return_exceptions=True,
    )
    finished, decided = results[:4], results[4:]
    assert [isinstance(r, LeaseLostError) for r in finished] == [False, False, True, True]
    assert [isinstance(r, LeaseLostError) for r in decided] == [True, True, False, False]
    for i in ids[:2]:
        stored = await store.get(i)
        assert stored.status is ExecutionStatus.FAILED
        assert (stored.error_reason, stored.lease_owner) == ("WHY", None)


async def test_more_writes_than_a_batch_all_land(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    count = MAX_BATCH + 20
    leases = await _claimed(store, new_execution, count)
    written = await asyncio.gather(
        *(
            store.set_status(i, lease, ExecutionStatus.RUNNING, _now())
            for i, lease in leases.items()
        )
    )
    assert {e.status for e in written} == {ExecutionStatus.RUNNING}
    assert {e.execution_id for e in written} == set(leases)


async def test_a_write_cancelled_while_queued_is_not_written(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    leases = await _claimed(store, new_execution, 3)
    ids = list(leases)
    # The first write starts a batch; the second queues behind it and is cancelled.
    first = asyncio.create_task(
        store.set_status(ids[0], leases[ids[0]], ExecutionStatus.RUNNING, _now())
    )
    await asyncio.sleep(0)
    queued = asyncio.create_task(
        store.add_attempt(ids[1], leases[ids[1]], _attempt(1), ExecutionStatus.RUNNING, _now())
    )
    await asyncio.sleep(0)
    queued.cancel()
    await first
    with pytest.raises(asyncio.CancelledError):
        await queued
    # Later writes still go through.
    await store.set_status(ids[2], leases[ids[2]], ExecutionStatus.RUNNING, _now())
    assert (await store.get(ids[1])).attempts == ()
    assert (await store.get(ids[2])).status is ExecutionStatus.RUNNING
