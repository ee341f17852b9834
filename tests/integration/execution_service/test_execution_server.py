"""The execution service over real gRPC, with a fake BidService (real gRPC too)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import grpc
import pytest
from execution_support import error_details
from marketplace.bids.v1 import bids_pb2
from marketplace.execution.v1 import execution_pb2 as pb

S = pb.ExecutionStatus


async def submit(stub: Any, task_id: str, **fields: Any) -> pb.Execution:
    request = pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=task_id, **fields)
    response = await stub.SubmitExecution(request, timeout=10)
    execution: pb.Execution = response.execution
    return execution


async def watch_all(stub: Any, execution_id: str) -> list[pb.ExecutionEvent]:
    stream = stub.WatchExecution(pb.WatchExecutionRequest(execution_id=execution_id), timeout=30)
    return [response.event async for response in stream]


async def test_submitted_execution_runs_and_completes_the_task(
    start_execution: Any, fake_bids: Any
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    _, stub = await start_execution()
    execution = await submit(stub, task_id)
    assert execution.status == S.EXECUTION_STATUS_QUEUED
    events = await watch_all(stub, execution.execution_id)
    final = events[-1].execution
    assert final.status == S.EXECUTION_STATUS_SUCCEEDED
    assert "Write a haiku" in final.result
    assert bids.transitions[task_id] == ["StartTask", "CompleteTask"]
    assert bids.tasks[task_id].status == bids_pb2.TASK_STATUS_COMPLETED
    assert bids.tasks[task_id].result == final.result


async def test_watch_streams_attempts_and_ends_at_the_terminal_state(
    start_execution: Any, fake_bids: Any
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    _, stub = await start_execution(llm_offline_transient_rate=0.6, llm_offline_seed=3)
    execution = await submit(stub, task_id, max_attempts=10)
    events = await watch_all(stub, execution.execution_id)
    attempts = [e.attempt.number for e in events if e.WhichOneof("kind") == "attempt"]
    statuses = [e.status_change.new_status for e in events if e.WhichOneof("kind") != "attempt"]
    final = events[-1].execution
    assert attempts == list(range(1, len(final.attempts) + 1))
    assert statuses[-1] == final.status
    assert final.status in (S.EXECUTION_STATUS_SUCCEEDED, S.EXECUTION_STATUS_FAILED)
    if len(attempts) > 1:
        assert S.EXECUTION_STATUS_RETRY_SCHEDULED in statuses


async def test_submit_of_an_unknown_task_is_not_found(start_execution: Any) -> None:
    _, stub = await start_execution()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await submit(stub, str(uuid.uuid4()))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(caught.value).reason == "TASK_NOT_FOUND"


async def test_submit_while_bids_is_down_is_unavailable(
    start_execution: Any, fake_bids: Any
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    bids.fail_next["GetTask"] = 100
    _, stub = await start_execution()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await submit(stub, task_id)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    unavailable = error_details(caught.value)
    assert (unavailable.reason, unavailable.error_type) == ("UNAVAILABLE", "TRANSIENT")
    assert unavailable.retry_delay is not None
    assert unavailable.retry_delay > 0


async def test_submit_is_idempotent_on_request_id(start_execution: Any, fake_bids: Any) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    _, stub = await start_execution()
    request = pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=task_id)
    first = (await stub.SubmitExecution(request)).execution
    second = (await stub.SubmitExecution(request)).execution
    assert first.execution_id == second.execution_id
    request.prompt = "something else"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitExecution(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value).reason == "IDEMPOTENCY_KEY_REUSED"


@pytest.mark.parametrize(
    "fields",
    [
        {"request_id": "not-a-uuid"},
        {"max_attempts": 11},
        {"output_schema": "{not json"},
        {"output_schema": json.dumps({"type": "no-such-type"})},
    ],
)
async def test_invalid_submit_is_invalid_argument(
    start_execution: Any, fake_bids: Any, fields: dict[str, Any]
) -> None:
    bids, _ = fake_bids
    _, stub = await start_execution()
    values = {"request_id": str(uuid.uuid4()), "task_id": bids.add_task(), **fields}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitExecution(pb.SubmitExecutionRequest(**values))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    invalid = error_details(caught.value)
    assert (invalid.reason, invalid.error_type) == ("INVALID_ARGUMENT", "PERMANENT")
    assert invalid.fields == [next(iter(fields))]
    assert bids.calls["GetTask"] == 0


async def test_cancel_of_a_running_execution_fails_the_task(
    start_execution: Any, fake_bids: Any
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    _, stub = await start_execution(llm_offline_latency_seconds=30.0)
    execution = await submit(stub, task_id)
    for _ in range(100):
        got = await stub.GetExecution(pb.GetExecutionRequest(execution_id=execution.execution_id))
        if got.execution.status == S.EXECUTION_STATUS_RUNNING:
            break
        await asyncio.sleep(0.05)
    cancelled = await stub.CancelExecution(
        pb.CancelExecutionRequest(execution_id=execution.execution_id), timeout=10
    )
    assert cancelled.execution.status == S.EXECUTION_STATUS_CANCELLED
    assert bids.transitions[task_id] == ["StartTask", "FailTask"]
    assert "cancelled" in bids.fail_messages[task_id]


async def test_cancel_of_a_queued_execution_leaves_the_task_pending(
    start_execution: Any, fake_bids: Any
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    _, api_stub = await start_execution(workers=0, cancel_wait_seconds=0)
    queued = await submit(api_stub, task_id)
    await api_stub.CancelExecution(
        pb.CancelExecutionRequest(execution_id=queued.execution_id), timeout=10
    )
    _, worker_stub = await start_execution()  # claims the cancelled execution and ends it
    final = (await watch_all(worker_stub, queued.execution_id))[-1].execution
    assert final.status == S.EXECUTION_STATUS_CANCELLED
    assert bids.calls["StartTask"] == bids.calls["FailTask"] == 0
    assert bids.tasks[task_id].status == bids_pb2.TASK_STATUS_PENDING


async def test_cancel_of_a_queued_execution_whose_task_was_started_fails_the_task(
    start_execution: Any, fake_bids: Any
) -> None:
    # StartTask landed, then the worker died before the execution turned RUNNING.
    bids, _ = fake_bids
    task_id = bids.add_task()
    _, api_stub = await start_execution(workers=0, cancel_wait_seconds=0)
    queued = await submit(api_stub, task_id)
    bids.tasks[task_id].status = bids_pb2.TASK_STATUS_PROCESSING
    bids.tasks[task_id].execution_id = queued.execution_id
    await api_stub.CancelExecution(
        pb.CancelExecutionRequest(execution_id=queued.execution_id), timeout=10
    )
    _, worker_stub = await start_execution()
    final = (await watch_all(worker_stub, queued.execution_id))[-1].execution
    assert final.status == S.EXECUTION_STATUS_CANCELLED
    assert bids.transitions[task_id] == ["FailTask"]
    assert "cancelled" in bids.fail_messages[task_id]


async def test_cancel_of_a_finished_execution_is_failed_precondition(
    start_execution: Any, fake_bids: Any
) -> None:
    bids, _ = fake_bids
    _, stub = await start_execution()
    execution = await submit(stub, bids.add_task())
    await watch_all(stub, execution.execution_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CancelExecution(pb.CancelExecutionRequest(execution_id=execution.execution_id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(caught.value).reason == "EXECUTION_NOT_ACTIVE"


async def test_lost_complete_reply_is_retried_with_the_same_event(
    start_execution: Any, fake_bids: Any
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    bids.fail_next["CompleteTask"] = 2
    bids.fail_next["StartTask"] = 1
    _, stub = await start_execution()
    execution = await submit(stub, task_id)
    events = await watch_all(stub, execution.execution_id)
    assert events[-1].execution.status == S.EXECUTION_STATUS_SUCCEEDED
    assert bids.calls["CompleteTask"] == 3
    assert bids.transitions[task_id] == ["StartTask", "CompleteTask"]


async def test_permanent_llm_error_fails_execution_and_task(
    start_execution: Any, fake_bids: Any
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    _, stub = await start_execution(llm_offline_permanent_rate=1.0)
    execution = await submit(stub, task_id)
    final = (await watch_all(stub, execution.execution_id))[-1].execution
    assert final.status == S.EXECUTION_STATUS_FAILED
    assert len(final.attempts) == 1
    assert bids.transitions[task_id] == ["StartTask", "FailTask"]
    assert bids.tasks[task_id].status == bids_pb2.TASK_STATUS_FAILED


async def test_list_executions_pages_newest_first(start_execution: Any, fake_bids: Any) -> None:
    bids, _ = fake_bids
    _, stub = await start_execution(workers=0)
    ids = [(await submit(stub, bids.add_task())).execution_id for _ in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListExecutions(pb.ListExecutionsRequest(page_size=2, page_token=token))
        seen += [e.execution_id for e in page.executions]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListExecutions(pb.ListExecutionsRequest(page_size=-1))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    invalid = error_details(caught.value)
    assert (invalid.reason, invalid.fields) == ("INVALID_ARGUMENT", ["page_size"])


async def test_complete_answers_with_text_and_attempts(start_execution: Any) -> None:
    _, stub = await start_execution()
    schema = json.dumps({"type": "object", "properties": {"answer": {"type": "string"}}})
    response = await stub.Complete(pb.CompleteRequest(prompt="hi", output_schema=schema))
    assert isinstance(json.loads(response.text), dict)
    assert [a.number for a in response.attempts] == [1]
    assert response.model


async def test_watch_of_an_unknown_execution_is_not_found(start_execution: Any) -> None:
    _, stub = await start_execution()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await watch_all(stub, str(uuid.uuid4()))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(caught.value).reason == "EXECUTION_NOT_FOUND"


async def test_second_submit_for_a_task_with_an_active_execution_is_already_exists(
    start_execution: Any, fake_bids: Any
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    _, stub = await start_execution(workers=0)
    await submit(stub, task_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await submit(stub, task_id)  # a new request_id: not a replay
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    details = error_details(caught.value)
    assert (details.reason, details.error_type) == ("EXECUTION_ALREADY_ACTIVE", "PERMANENT")


async def test_submit_for_a_task_that_is_not_pending_is_failed_precondition(
    start_execution: Any, fake_bids: Any
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    bids.tasks[task_id].status = bids_pb2.TASK_STATUS_COMPLETED
    _, stub = await start_execution(workers=0)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await submit(stub, task_id)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = error_details(caught.value)
    assert (details.reason, details.error_type) == ("TASK_NOT_PENDING", "PERMANENT")
    assert bids.calls["StartTask"] == 0
