"""NUL in the execution service's text: the same INVALID_ARGUMENT, naming the field, on
SQLite and PostgreSQL (whose text type cannot hold NUL), and the task is left as it was."""

from __future__ import annotations

import grpc
from bids_support import Harness, create_task_request, expect_error, new_id, start_request
from marketplace.bids.v1 import bids_pb2
from marketplace.common.v1 import common_pb2


async def _started_task(bids: Harness) -> tuple[str, str]:
    task = (await bids.as_("alice").CreateTask(create_task_request())).task
    execution_id = new_id()
    await bids.as_("service").StartTask(start_request(task.task_id, execution_id))
    return task.task_id, execution_id


async def _status(bids: Harness, task_id: str) -> int:
    reply = await bids.as_("admin").GetTask(bids_pb2.GetTaskRequest(task_id=task_id))
    return int(reply.task.status)


async def test_result_with_nul_is_invalid_argument_on_result(bids: Harness) -> None:
    task_id, execution_id = await _started_task(bids)
    request = bids_pb2.CompleteTaskRequest(
        task_id=task_id, execution_id=execution_id, event_id=new_id(), result="ok\x00tail"
    )
    d = await expect_error(bids.as_("service").CompleteTask(request))
    assert (d.code, d.info.reason, d.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        ["result"],
    )
    assert await _status(bids, task_id) == bids_pb2.TASK_STATUS_PROCESSING


async def test_fail_message_with_nul_is_invalid_argument_on_message(bids: Harness) -> None:
    task_id, execution_id = await _started_task(bids)
    request = bids_pb2.FailTaskRequest(
        task_id=task_id,
        execution_id=execution_id,
        event_id=new_id(),
        error_type=common_pb2.ERROR_TYPE_PERMANENT,
        message="boom\x00",
    )
    d = await expect_error(bids.as_("service").FailTask(request))
    assert (d.code, d.info.reason, d.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        ["message"],
    )
    assert await _status(bids, task_id) == bids_pb2.TASK_STATUS_PROCESSING


async def test_fail_message_may_carry_terminal_escapes(bids: Harness) -> None:
    task_id, execution_id = await _started_task(bids)
    message = "\x1b[31mprovider said no\x1b[0m"
    request = bids_pb2.FailTaskRequest(
        task_id=task_id,
        execution_id=execution_id,
        event_id=new_id(),
        error_type=common_pb2.ERROR_TYPE_PERMANENT,
        message=message,
    )
    task = (await bids.as_("service").FailTask(request)).task
    assert (task.status, task.result) == (bids_pb2.TASK_STATUS_FAILED, message)
