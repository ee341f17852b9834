"""Who may do what on ExecutionService, over the wire, with tokens on both services.

Every RPC x every kind of caller (anonymous, the task's client, the winning
agent, another client, another agent, a service that did not submit, admin)
answers the code and reason docs/security.md documents; a stranger's NOT_FOUND
is indistinguishable from an unknown id's.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from bids_support import Details, details, scalar
from execution_access import CALLERS, World, running_world
from marketplace.bids.v1 import bids_pb2
from marketplace.execution.v1 import execution_pb2 as pb

OK = "OK"
UNAUTH = "UNAUTHENTICATED/UNAUTHENTICATED"
DENIED = "PERMISSION_DENIED/PERMISSION_DENIED"
NO_EXECUTION = "NOT_FOUND/EXECUTION_NOT_FOUND"
NO_TASK = "NOT_FOUND/TASK_NOT_FOUND"

# The documented matrix (docs/security.md), for an execution on alice's task won by
# "agent" and submitted by that agent.
OWNERS_ONLY = {
    "none": UNAUTH,
    "alice": OK,
    "agent": OK,
    "bob": NO_EXECUTION,
    "other_agent": NO_EXECUTION,
    "service": NO_EXECUTION,
    "admin": OK,
}
SUBMIT = {
    "none": UNAUTH,
    "alice": DENIED,
    "agent": OK,
    "bob": DENIED,
    "other_agent": NO_TASK,
    "service": OK,
    "admin": OK,
}
COMPLETE = {
    "none": UNAUTH,
    "alice": DENIED,
    "agent": OK,
    "bob": DENIED,
    "other_agent": OK,
    "service": OK,
    "admin": OK,
}


@pytest.fixture(params=["sqlite", "postgres"])
def execution_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The execution service's database on each backend (its SQL filters ownership)."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path / 'execution.db'}"


@pytest.fixture
async def world(execution_url: str, tmp_path: Path) -> AsyncIterator[World]:
    """Bids (SQLite) and execution, both with tokens."""
    async with running_world(f"sqlite+aiosqlite:///{tmp_path / 'bids.db'}", execution_url) as w:
        yield w


async def outcome(call: Awaitable[Any]) -> str:
    """``OK`` or ``CODE/REASON`` of one call."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        found = details(exc)
        return f"{found.code.name}/{found.info.reason}"
    return OK


async def failure(call: Awaitable[Any]) -> Details:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return details(exc)
    raise AssertionError("the call succeeded")


def same_answer(a: Details, a_id: str, b: Details, b_id: str) -> None:
    """Two refusals are identical once the id each names is blanked out."""
    assert a.code == b.code
    assert a.info == b.info
    assert a.message.replace(a_id, "<id>") == b.message.replace(b_id, "<id>")
    assert a_id not in b.message
    assert b_id not in a.message


async def test_get_watch_and_cancel_are_for_owners_and_admin(world: World) -> None:
    task_id = await world.won_task()
    execution_id = (await world.submit("agent", task_id)).execution_id
    get = pb.GetExecutionRequest(execution_id=execution_id)

    gets = {c: await outcome(world.execution(c).GetExecution(get)) for c in CALLERS}
    watches = {
        c: await outcome(world.execution(c).first_watch_event(execution_id)) for c in CALLERS
    }
    assert gets == OWNERS_ONLY
    assert watches == OWNERS_ONLY
    first = await world.execution("alice").first_watch_event(execution_id)
    assert first.event.execution.execution_id == execution_id
    assert first.event.execution.status == pb.EXECUTION_STATUS_QUEUED

    # A stranger's refusal is exactly an unknown id's, for Get, Watch and Cancel.
    unknown = str(uuid.uuid4())
    bob = world.execution("bob")
    for rpc in (
        lambda i: bob.GetExecution(pb.GetExecutionRequest(execution_id=i)),
        lambda i: bob.first_watch_event(i),
        lambda i: bob.CancelExecution(pb.CancelExecutionRequest(execution_id=i)),
    ):
        same_answer(
            await failure(rpc(execution_id)), execution_id, await failure(rpc(unknown)), unknown
        )

    # Cancel: every refused caller first, and nothing was cancelled; then the owners.
    cancel = pb.CancelExecutionRequest(execution_id=execution_id)
    refused = [c for c in CALLERS if OWNERS_ONLY[c] != OK]
    cancels = {c: await outcome(world.execution(c).CancelExecution(cancel)) for c in refused}
    sql = "SELECT cancel_requested FROM executions WHERE execution_id = :id"
    db_id = (
        uuid.UUID(execution_id)
        if "postgresql" in world.execution_url
        else uuid.UUID(execution_id).hex
    )
    assert not await scalar(world.execution_url, sql, id=db_id)
    for caller in ("alice", "agent", "admin"):
        cancels[caller] = await outcome(world.execution(caller).CancelExecution(cancel))
    assert cancels == OWNERS_ONLY
    assert await scalar(world.execution_url, sql, id=db_id)


async def test_submit_is_for_the_winning_agent_services_and_admin(world: World) -> None:
    refused_task = await world.won_task()
    results: dict[str, str] = {}
    for caller in CALLERS:
        task_id = refused_task if SUBMIT[caller] != OK else await world.won_task()
        results[caller] = await outcome(world.submit(caller, task_id))
    assert results == SUBMIT

    # The refused attempts left the task untouched: no execution, still PENDING.
    listed = await world.execution("admin").ListExecutions(
        pb.ListExecutionsRequest(task_id=refused_task)
    )
    assert list(listed.executions) == []
    task = await world.bids("admin").GetTask(bids_pb2.GetTaskRequest(task_id=refused_task))
    assert task.task.status == bids_pb2.TASK_STATUS_PENDING

    # Another agent is told exactly what an unknown task would tell it.
    unknown = str(uuid.uuid4())
    same_answer(
        await failure(world.submit("other_agent", refused_task)),
        refused_task,
        await failure(world.submit("other_agent", unknown)),
        unknown,
    )
    # ... even when the task is not PENDING any more (its status is not revealed).
    running = await world.won_task()
    await world.submit("agent", running)
    same_answer(
        await failure(world.submit("other_agent", running)),
        running,
        await failure(world.submit("other_agent", unknown)),
        unknown,
    )


async def test_a_task_created_without_a_bid_is_submitted_by_a_service_or_admin(
    world: World,
) -> None:
    from bids_support import create_task_request

    created = await world.bids("alice").CreateTask(create_task_request())
    task_id = created.task.task_id
    assert created.task.agent_id == ""
    assert await outcome(world.submit("agent", task_id)) == NO_TASK
    assert await outcome(world.submit("alice", task_id)) == DENIED
    execution = await world.submit("service", task_id)
    # Its client owns it; the service that submitted it follows it.
    for caller in ("alice", "service", "admin"):
        get = pb.GetExecutionRequest(execution_id=execution.execution_id)
        assert await outcome(world.execution(caller).GetExecution(get)) == OK
    for caller in ("agent", "bob", "other_agent"):
        get = pb.GetExecutionRequest(execution_id=execution.execution_id)
        assert await outcome(world.execution(caller).GetExecution(get)) == NO_EXECUTION


async def test_list_returns_only_the_callers_own_executions(world: World) -> None:
    by_agent = (await world.submit("agent", await world.won_task())).execution_id
    by_service = (await world.submit("service", await world.won_task())).execution_id
    alice_other_agent = (
        await world.submit("other_agent", await world.won_task(agent="other_agent"))
    ).execution_id
    bob_task = await world.won_task(agent="other_agent", client="bob")
    bobs = (await world.submit("admin", bob_task)).execution_id

    async def listed(caller: str, **filters: Any) -> set[str]:
        ids: set[str] = set()
        token = ""
        while True:  # small pages: the page token is bound to the caller's scope
            page = await world.execution(caller).ListExecutions(
                pb.ListExecutionsRequest(page_size=1, page_token=token, **filters)
            )
            ids |= {e.execution_id for e in page.executions}
            token = page.next_page_token
            if not token:
                return ids

    seen = {c: await listed(c) for c in CALLERS if c != "none"}
    assert seen == {
        "alice": {by_agent, by_service, alice_other_agent},
        "agent": {by_agent, by_service},
        "bob": {bobs},
        "other_agent": {alice_other_agent, bobs},
        "service": {by_service},
        "admin": {by_agent, by_service, alice_other_agent, bobs},
    }
    assert (
        await outcome(world.execution("none").ListExecutions(pb.ListExecutionsRequest())) == UNAUTH
    )

    # A task_id filter on someone else's task is an empty page, not an error.
    assert await listed("bob", task_id=await _task_of(world, by_agent)) == set()
    assert await listed("other_agent", task_id=await _task_of(world, by_agent)) == set()
    assert await listed("alice", task_id=bob_task) == set()
    assert await listed("alice", task_id=await _task_of(world, by_agent)) == {by_agent}

    # A page token is bound to its caller: another caller cannot continue alice's list.
    page = await world.execution("alice").ListExecutions(pb.ListExecutionsRequest(page_size=1))
    refused = await failure(
        world.execution("bob").ListExecutions(
            pb.ListExecutionsRequest(page_size=1, page_token=page.next_page_token)
        )
    )
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.fields == ["page_token"]


async def _task_of(world: World, execution_id: str) -> str:
    got = await world.execution("admin").GetExecution(
        pb.GetExecutionRequest(execution_id=execution_id)
    )
    return str(got.execution.task_id)


async def test_complete_is_for_agents_services_and_admin(world: World) -> None:
    request = pb.CompleteRequest(prompt="Say hello.")
    results = {c: await outcome(world.execution(c).Complete(request)) for c in CALLERS}
    assert results == COMPLETE


async def test_a_request_id_reused_by_another_principal_never_replays_the_answer(
    world: World,
) -> None:
    task_id = await world.won_task()
    request = pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=task_id)
    first = (await world.execution("agent").SubmitExecution(request)).execution
    # The same principal repeating it gets the same execution back.
    again = (await world.execution("agent").SubmitExecution(request)).execution
    assert again.execution_id == first.execution_id

    for caller in ("other_agent", "service", "admin"):
        refused = await failure(world.execution(caller).SubmitExecution(request))
        assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.info.reason == "IDEMPOTENCY_KEY_REUSED"
        assert refused.fields == ["request_id"]
        # Nothing of the first answer: neither the execution nor the task.
        assert first.execution_id not in refused.message
        assert task_id not in refused.message
        assert first.execution_id not in str(refused.info)

    # And still exactly one execution for that request.
    listed = await world.execution("admin").ListExecutions(
        pb.ListExecutionsRequest(task_id=task_id)
    )
    assert [e.execution_id for e in listed.executions] == [first.execution_id]
