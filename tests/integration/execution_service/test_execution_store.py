"""SqlExecutionStore on SQLite and PostgreSQL: claiming, leases, fencing, idempotency."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from marketplace_common.errors import ErrorType, IdempotencyKeyReusedError
from marketplace_execution.domain.errors import (
    ExecutionAlreadyActiveError,
    ExecutionNotActiveError,
    ExecutionNotFoundError,
    LeaseLostError,
)
from marketplace_execution.domain.models import AttemptView, ExecutionStatus, Outcome
from marketplace_execution.domain.ports import Lease
from marketplace_execution.storage.store import SqlExecutionStore
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

LEASE = 30.0
A = Lease("a", 1)  # the first claim of an execution, by owner "a"


def now() -> datetime:
    return datetime.now(UTC)


def attempt(number: int, error: ErrorType | None = None) -> AttemptView:
    t = now()
    return AttemptView(number=number, started_at=t, finished_at=t, error_type=error, code="x")


async def test_created_execution_is_queued_and_readable(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    created = await store.create(new_execution())
    loaded = await store.get(created.execution_id)
    assert loaded.status is ExecutionStatus.QUEUED
    assert loaded.created_at.tzinfo is not None
    assert loaded == created


async def test_unknown_execution_is_not_found(store: SqlExecutionStore, new_execution: Any) -> None:
    with pytest.raises(ExecutionNotFoundError):
        await store.get(uuid.uuid4())


async def test_repeated_request_id_returns_the_first(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    first = await store.create(new_execution())
    again = await store.create(new_execution(request_id=first.request_id, task_id=first.task_id))
    assert again.execution_id == first.execution_id


async def test_request_id_with_other_fingerprint_is_refused(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    first = await store.create(new_execution())
    with pytest.raises(IdempotencyKeyReusedError):
        await store.create(new_execution(request_id=first.request_id, request_fingerprint="0" * 64))


async def test_second_active_execution_of_a_task_is_refused(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    first = await store.create(new_execution())
    with pytest.raises(ExecutionAlreadyActiveError):
        await store.create(new_execution(task_id=first.task_id))


async def test_claim_takes_each_execution_once(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    ids = {(await store.create(new_execution())).execution_id for _ in range(5)}
    first = await store.claim("a", 3, now(), LEASE)
    second = await store.claim("b", 10, now(), LEASE)
    assert len(first) == 3
    assert set(first) | set(second) == ids
    assert not set(first) & set(second)
    assert await store.claim("c", 10, now(), LEASE) == []


async def test_concurrent_claimers_never_share_an_execution(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    ids = {(await store.create(new_execution())).execution_id for _ in range(40)}
    results = await asyncio.gather(*(store.claim(f"w{i}", 3, now(), LEASE) for i in range(20)))
    claimed = [i for batch in results for i in batch]
    assert len(claimed) == len(set(claimed))
    assert set(claimed) <= ids


async def test_expired_lease_is_claimed_again(store: SqlExecutionStore, new_execution: Any) -> None:
    created = await store.create(new_execution())
    assert await store.claim("dead", 1, now(), 0.01) == [created.execution_id]
    await asyncio.sleep(0.05)
    assert await store.claim("alive", 1, now(), LEASE) == [created.execution_id]
    with pytest.raises(LeaseLostError):
        await store.set_status(
            created.execution_id, Lease("dead", 1), ExecutionStatus.RUNNING, now()
        )


async def test_renew_keeps_the_lease(store: SqlExecutionStore, new_execution: Any) -> None:
    created = await store.create(new_execution())
    await store.claim("a", 1, now(), 0.2)
    renewal = await store.renew("a", {created.execution_id: 1}, now(), LEASE)
    assert renewal.held == {created.execution_id}
    await asyncio.sleep(0.3)
    assert await store.claim("b", 1, now(), LEASE) == []


async def test_attempts_are_stored_in_order_with_status(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    eid = (await store.create(new_execution())).execution_id
    await store.claim("a", 1, now(), LEASE)
    await store.add_attempt(
        eid, A, attempt(1, ErrorType.TRANSIENT), ExecutionStatus.RETRY_SCHEDULED, now()
    )
    execution = await store.add_attempt(eid, A, attempt(2), ExecutionStatus.RUNNING, now())
    assert [a.number for a in execution.attempts] == [1, 2]
    assert execution.attempts[0].error_type is ErrorType.TRANSIENT
    assert execution.status is ExecutionStatus.RUNNING


async def test_a_fenced_write_given_the_attempts_returns_them_without_reading_them(
    store: SqlExecutionStore, new_execution: Any, engine: AsyncEngine
) -> None:
    # The run holding the lease knows its attempts: its writes skip the SELECT of
    # the attempts that would give them back, and still return them (plus the new one).
    eid = (await store.create(new_execution())).execution_id
    await store.claim("a", 1, now(), LEASE)
    first = await store.add_attempt(
        eid, A, attempt(1, ErrorType.TRANSIENT), ExecutionStatus.RETRY_SCHEDULED, now()
    )
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        second = await store.add_attempt(
            eid, A, attempt(2), ExecutionStatus.RUNNING, now(), attempts=first.attempts
        )
        again = await store.add_attempt(  # a retried write: the attempt is not added twice
            eid, A, attempt(2), ExecutionStatus.RUNNING, now(), attempts=second.attempts
        )
        decided = await store.decide(
            eid, A, Outcome(ExecutionStatus.SUCCEEDED, "done"), now(), attempts=again.attempts
        )
        finished = await store.finish(eid, A, now(), attempts=decided.attempts)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert not [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    for execution in (second, again, decided, finished):
        assert [a.number for a in execution.attempts] == [1, 2]
    assert finished.status is ExecutionStatus.SUCCEEDED
    assert (await store.get(eid)).attempts == finished.attempts


async def test_a_fenced_write_given_the_attempts_is_fenced_alike(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    # The one-statement form (PostgreSQL) keeps the fence: a stale lease stores
    # neither the status nor the attempt.
    eid = (await store.create(new_execution())).execution_id
    await store.claim("a", 1, now(), LEASE)
    stale = Lease("a", 0)
    with pytest.raises(LeaseLostError):
        await store.add_attempt(eid, stale, attempt(1), ExecutionStatus.RUNNING, now(), attempts=())
    with pytest.raises(LeaseLostError):
        await store.set_status(eid, stale, ExecutionStatus.RUNNING, now(), attempts=())
    with pytest.raises(LeaseLostError):  # not decided yet: finish's fence fails
        await store.finish(eid, A, now(), attempts=())
    stored = await store.get(eid)
    assert stored.attempts == ()
    assert stored.status is ExecutionStatus.QUEUED


async def test_a_claim_returns_each_execution_as_claimed_with_its_attempts(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    # The run starts from what the claim returned (no read of its own): a resumed
    # execution comes with its attempts, a fresh one as stored, both with the new lease.
    resumed = (await store.create(new_execution())).execution_id
    await store.claim("a", 1, now(), LEASE)
    await store.set_status(resumed, A, ExecutionStatus.RUNNING, now())
    await store.add_attempt(
        resumed, A, attempt(1, ErrorType.TRANSIENT), ExecutionStatus.RETRY_SCHEDULED, now()
    )
    fresh = (await store.create(new_execution())).execution_id
    later = now() + timedelta(seconds=2 * LEASE)  # the lease of "a" has expired
    claimed = await store.claim("b", 5, later, LEASE)
    assert sorted(claimed) == sorted([resumed, fresh])
    assert claimed.taken_over == 1
    for execution_id in (resumed, fresh):
        assert claimed.executions[execution_id] == await store.get(execution_id)
    assert [a.number for a in claimed.executions[resumed].attempts] == [1]
    assert claimed.executions[resumed].lease_owner == "b"
    assert claimed.executions[resumed].lease_epoch == claimed.epochs[resumed] == 2
    assert claimed.executions[fresh].attempts == ()
    assert claimed.executions[fresh].lease_epoch == claimed.epochs[fresh] == 1


async def test_outcome_applies_only_at_finish(store: SqlExecutionStore, new_execution: Any) -> None:
    eid = (await store.create(new_execution())).execution_id
    await store.claim("a", 1, now(), LEASE)
    decided = await store.decide(eid, A, Outcome(ExecutionStatus.SUCCEEDED, "done"), now())
    assert decided.status is ExecutionStatus.QUEUED
    assert decided.pending_outcome is ExecutionStatus.SUCCEEDED
    finished = await store.finish(eid, A, now())
    assert finished.status is ExecutionStatus.SUCCEEDED
    assert finished.result == "done"
    assert finished.lease_owner is None
    assert await store.claim("b", 1, now() + timedelta(hours=1), LEASE) == []


async def test_cancel_fences_out_the_running_worker(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    eid = (await store.create(new_execution())).execution_id
    await store.claim("a", 1, now(), LEASE)
    cancelled = await store.request_cancel(eid, now())
    assert cancelled.pending_outcome is ExecutionStatus.CANCELLED
    with pytest.raises(LeaseLostError):
        await store.add_attempt(eid, A, attempt(1), ExecutionStatus.RUNNING, now())
    renewal = await store.renew("a", {eid: 1}, now(), LEASE)
    assert renewal.cancel_requested == {eid}
    finished = await store.finish(eid, A, now())
    assert finished.status is ExecutionStatus.CANCELLED


async def test_cancel_of_a_finished_execution_is_refused(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    eid = (await store.create(new_execution())).execution_id
    await store.claim("a", 1, now(), LEASE)
    await store.decide(eid, A, Outcome(ExecutionStatus.SUCCEEDED, "done"), now())
    await store.finish(eid, A, now())
    with pytest.raises(ExecutionNotActiveError):
        await store.request_cancel(eid, now())


async def test_release_frees_the_lease_at_once(
    store: SqlExecutionStore, new_execution: Any
) -> None:
    eid = (await store.create(new_execution())).execution_id
    await store.claim("a", 1, now(), LEASE)
    await store.release(eid, A)
    assert await store.claim("b", 1, now(), LEASE) == [eid]


async def test_list_pages_newest_first(store: SqlExecutionStore, new_execution: Any) -> None:
    base = now()
    task = uuid.uuid4()
    made = []
    for i in range(5):
        e = await store.create(new_execution(created_at=base + timedelta(seconds=i)))
        made.append(e.execution_id)
    await store.create(new_execution(task_id=task))
    page = await store.list_page(task_id=None, status=None, after=None, limit=10)
    assert len(page) == 6
    only = await store.list_page(task_id=task, status=None, after=None, limit=10)
    assert [e.task_id for e in only] == [task]
    queued = await store.list_page(
        task_id=None, status=ExecutionStatus.SUCCEEDED, after=None, limit=10
    )
    assert queued == []
