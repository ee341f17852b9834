"""ListTaskEvents over a real channel: the task's audit trail, its access rules and paging."""

from __future__ import annotations

import grpc
from bids_support import (
    ALICE,
    Harness,
    complete_request,
    create_task_request,
    expect_error,
    new_id,
    start_request,
)
from marketplace.bids.v1 import bids_pb2


async def _events(
    h: Harness, who: str, task_id: str, **kw: object
) -> bids_pb2.ListTaskEventsResponse:
    request = bids_pb2.ListTaskEventsRequest(task_id=task_id, **kw)  # type: ignore[arg-type]
    response: bids_pb2.ListTaskEventsResponse = await h.as_(who).ListTaskEvents(request)
    return response


async def test_the_owner_reads_each_transition_oldest_first(bids: Harness) -> None:
    alice, service = bids.as_("alice"), bids.as_("service")
    task = (await alice.CreateTask(create_task_request(ALICE))).task
    assert list((await _events(bids, "alice", task.task_id)).events) == []
    execution_id = new_id()
    start = start_request(task.task_id, execution_id)
    await service.StartTask(start)
    complete = complete_request(task.task_id, execution_id, result="done")
    await service.CompleteTask(complete)
    # A replayed transition writes no second event.
    await service.CompleteTask(complete)

    page = await _events(bids, "alice", task.task_id)
    assert page.next_page_token == ""
    got = [
        (e.event_id, e.task_id, e.previous_status, e.new_status, e.execution_id, e.actor)
        for e in page.events
    ]
    assert got == [
        (
            start.event_id,
            task.task_id,
            bids_pb2.TASK_STATUS_PENDING,
            bids_pb2.TASK_STATUS_PROCESSING,
            execution_id,
            "service:execution",
        ),
        (
            complete.event_id,
            task.task_id,
            bids_pb2.TASK_STATUS_PROCESSING,
            bids_pb2.TASK_STATUS_COMPLETED,
            execution_id,
            "service:execution",
        ),
    ]
    first, second = page.events
    assert first.created_at.ToDatetime() <= second.created_at.ToDatetime()
    assert first.created_at.seconds > 0
    # The service and an admin see every task's trail.
    for who in ("service", "admin"):
        assert [e.event_id for e in (await _events(bids, who, task.task_id)).events] == [
            start.event_id,
            complete.event_id,
        ]


async def test_a_stranger_gets_the_not_found_of_an_unknown_task(bids: Harness) -> None:
    task = (await bids.as_("alice").CreateTask(create_task_request(ALICE))).task
    unknown_id = new_id()
    for who in ("bob", "agent"):
        caller = bids.as_(who)
        d = await expect_error(
            caller.ListTaskEvents(bids_pb2.ListTaskEventsRequest(task_id=task.task_id))
        )
        unknown = await expect_error(
            caller.ListTaskEvents(bids_pb2.ListTaskEventsRequest(task_id=unknown_id))
        )
        assert (d.code, d.info.reason) == (grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND")
        assert d.message.replace(task.task_id, "<id>") == unknown.message.replace(
            unknown_id, "<id>"
        )
        assert ALICE not in d.message


async def test_pages_walk_the_trail_once_in_order(bids: Harness) -> None:
    alice, service = bids.as_("alice"), bids.as_("service")
    # Three tasks, each started then failed or completed: only the asked task's events come back.
    tasks = [(await alice.CreateTask(create_task_request(ALICE))).task for _ in range(3)]
    expected: list[str] = []
    for i, task in enumerate(tasks):
        execution_id = new_id()
        start = start_request(task.task_id, execution_id)
        await service.StartTask(start)
        done = complete_request(task.task_id, execution_id)
        await service.CompleteTask(done)
        if i == 1:
            expected = [start.event_id, done.event_id]

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await _events(bids, "alice", tasks[1].task_id, page_size=1, page_token=token)
        assert len(page.events) <= 1
        seen += [e.event_id for e in page.events]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == expected
    assert pages in (2, 3)  # the last full page may or may not know it is the last

    # A token is bound to its task: reused on another task it is a bad page_token.
    first = await _events(bids, "alice", tasks[1].task_id, page_size=1)
    d = await expect_error(
        alice.ListTaskEvents(
            bids_pb2.ListTaskEventsRequest(
                task_id=tasks[0].task_id, page_token=first.next_page_token
            )
        )
    )
    assert d.code == grpc.StatusCode.INVALID_ARGUMENT
    assert d.fields == ["page_token"]


async def test_bad_fields_are_named_together(bids: Harness) -> None:
    d = await expect_error(
        bids.as_("alice").ListTaskEvents(
            bids_pb2.ListTaskEventsRequest(task_id="not-a-uuid", page_size=-1, page_token="!!!")
        )
    )
    assert d.code == grpc.StatusCode.INVALID_ARGUMENT
    assert d.info.reason == "INVALID_ARGUMENT"
    assert set(d.fields) == {
        "task_id",
        "page_size",
        "page_token",
    }
