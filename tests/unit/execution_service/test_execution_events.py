"""The in-process event bus and the watch stream's logic, on an in-memory store."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from marketplace_common.auth import Principal, Role
from marketplace_execution.domain.events import EventBus
from marketplace_execution.domain.models import (
    AttemptView,
    Execution,
    ExecutionEvent,
    ExecutionStatus,
)
from marketplace_execution.domain.service import ExecutionService, ServiceConfig


def execution(status: ExecutionStatus, attempts: int = 0) -> Execution:
    now = datetime.now(UTC)
    return Execution(
        execution_id=EID,
        task_id=uuid.uuid4(),
        request_id=uuid.uuid4(),
        status=status,
        prompt="p",
        model="m",
        output_schema=None,
        max_attempts=3,
        created_at=now,
        updated_at=now,
        attempts=tuple(
            AttemptView(number=n, started_at=now, finished_at=now) for n in range(1, attempts + 1)
        ),
    )


EID = uuid.uuid4()
ADMIN = Principal(Role.ADMIN, "ops")


class OneRowStore:
    """Just ``get``: what watch needs (another replica changes ``current``)."""

    def __init__(self, current: Execution) -> None:
        self.current = current

    async def get(self, execution_id: uuid.UUID) -> Execution:
        return self.current


def service(store: Any, bus: EventBus, poll: float = 0.05) -> ExecutionService:
    return ExecutionService(
        store=store,
        bids=None,  # type: ignore[arg-type]
        runner=None,  # type: ignore[arg-type]
        bus=bus,
        config=ServiceConfig(default_model="m", watch_poll_seconds=poll),
        now=lambda: datetime.now(UTC),
    )


def test_bus_delivers_only_to_subscribers_of_that_execution() -> None:
    bus = EventBus()
    with bus.subscribe(EID) as mine, bus.subscribe(uuid.uuid4()) as other:
        bus.publish(ExecutionEvent(execution(ExecutionStatus.RUNNING)))
        assert mine.qsize() == 1
        assert other.qsize() == 0
    assert bus.subscriber_count(EID) == 0


async def test_watch_of_a_finished_execution_yields_its_state_and_ends() -> None:
    svc = service(OneRowStore(execution(ExecutionStatus.SUCCEEDED, 1)), EventBus())
    events = [e async for e in svc.watch(ADMIN, EID)]
    assert len(events) == 1
    assert events[0].status_change == (None, ExecutionStatus.SUCCEEDED)


async def test_watch_sees_changes_of_another_replica_by_polling() -> None:
    store = OneRowStore(execution(ExecutionStatus.RUNNING))
    svc = service(store, EventBus())
    seen: list[ExecutionEvent] = []

    async def consume() -> None:
        async for event in svc.watch(ADMIN, EID):
            seen.append(event)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    store.current = execution(ExecutionStatus.SUCCEEDED, 2)
    await asyncio.wait_for(task, 2)
    kinds = [
        ("attempt", e.attempt.number) if e.attempt else ("status", e.status_change) for e in seen
    ]
    assert kinds == [
        ("status", (None, ExecutionStatus.RUNNING)),
        ("attempt", 1),
        ("attempt", 2),
        ("status", (ExecutionStatus.RUNNING, ExecutionStatus.SUCCEEDED)),
    ]


async def test_watch_relays_in_process_events_without_duplicates() -> None:
    bus = EventBus()
    store = OneRowStore(execution(ExecutionStatus.RUNNING))
    svc = service(store, bus, poll=5.0)
    stream = svc.watch(ADMIN, EID)
    first = await anext(stream)
    assert first.execution.status is ExecutionStatus.RUNNING
    one = execution(ExecutionStatus.RETRY_SCHEDULED, 1)
    bus.publish(ExecutionEvent(one, attempt=one.attempts[0]))
    bus.publish(ExecutionEvent(one, attempt=one.attempts[0]))
    done = execution(ExecutionStatus.FAILED, 1)
    bus.publish(
        ExecutionEvent(done, status_change=(ExecutionStatus.RUNNING, ExecutionStatus.FAILED))
    )
    rest = [e async for e in stream]
    assert [e.attempt.number for e in rest if e.attempt] == [1]
    assert rest[-1].status_change == (ExecutionStatus.RUNNING, ExecutionStatus.FAILED)
