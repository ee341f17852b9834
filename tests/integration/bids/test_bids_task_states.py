"""The task state machine of docs/design.md, every (status, transition) pair over a real channel:
PENDING -> PROCESSING -> COMPLETED | FAILED; anything else FAILED_PRECONDITION, task unchanged."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from bids_support import Harness, create_task_request, expect_error, new_id
from marketplace.bids.v1 import bids_pb2
from marketplace.common.v1 import common_pb2

S = bids_pb2

# (current status, transition) -> the reason when refused; absent pairs are allowed.
REFUSED = {
    ("PENDING", "CompleteTask"): "TASK_NOT_PROCESSING",
    ("PENDING", "FailTask"): "TASK_NOT_PROCESSING",
    ("PROCESSING", "StartTask"): "TASK_NOT_PENDING",
    ("COMPLETED", "StartTask"): "TASK_NOT_PENDING",
    ("COMPLETED", "CompleteTask"): "TASK_NOT_PROCESSING",
    ("COMPLETED", "FailTask"): "TASK_NOT_PROCESSING",
    ("FAILED", "StartTask"): "TASK_NOT_PENDING",
    ("FAILED", "CompleteTask"): "TASK_NOT_PROCESSING",
    ("FAILED", "FailTask"): "TASK_NOT_PROCESSING",
}
TARGET = {"StartTask": "PROCESSING", "CompleteTask": "COMPLETED", "FailTask": "FAILED"}
STATUSES = ["PENDING", "PROCESSING", "COMPLETED", "FAILED"]


def _request(rpc: str, task_id: str, execution_id: str) -> Any:
    ids = {"task_id": task_id, "execution_id": execution_id, "event_id": new_id()}
    if rpc == "StartTask":
        return S.StartTaskRequest(**ids)
    if rpc == "CompleteTask":
        return S.CompleteTaskRequest(**ids, result="done")
    return S.FailTaskRequest(**ids, error_type=common_pb2.ERROR_TYPE_PERMANENT, message="no")


async def _task_in(bids: Harness, status: str) -> tuple[str, str]:
    task_id = (await bids.as_("alice").CreateTask(create_task_request())).task.task_id
    execution_id = new_id()
    service = bids.as_("service")
    if status != "PENDING":
        await service.StartTask(_request("StartTask", task_id, execution_id))
    if status in ("COMPLETED", "FAILED"):
        rpc = "CompleteTask" if status == "COMPLETED" else "FailTask"
        await getattr(service, rpc)(_request(rpc, task_id, execution_id))
    return task_id, execution_id


def _name(status: int) -> str:
    return S.TaskStatus.Name(status).removeprefix("TASK_STATUS_")


@pytest.mark.parametrize("rpc", ["StartTask", "CompleteTask", "FailTask"])
@pytest.mark.parametrize("status", STATUSES)
async def test_transition_follows_the_contract(bids: Harness, status: str, rpc: str) -> None:
    task_id, execution_id = await _task_in(bids, status)
    call = getattr(bids.as_("service"), rpc)(_request(rpc, task_id, execution_id))
    reason = REFUSED.get((status, rpc))
    if reason is None:
        assert _name((await call).task.status) == TARGET[rpc]
        return
    d = await expect_error(call)
    assert (d.code, d.info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, reason)
    assert (d.info.metadata["status"], d.info.metadata["targetStatus"]) == (status, TARGET[rpc])
    after = await bids.as_("admin").GetTask(S.GetTaskRequest(task_id=task_id))
    assert _name(after.task.status) == status
