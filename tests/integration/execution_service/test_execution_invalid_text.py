"""NUL characters in request text answer INVALID_ARGUMENT naming the field, on both
databases (PostgreSQL refuses NUL in text; SQLite stored it)."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from bids_support import scalar
from execution_support import error_details
from marketplace.execution.v1 import execution_pb2 as pb


@pytest.mark.parametrize(
    ("field", "value"),
    [("prompt", "write\x00this"), ("model", "gpt\x00"), ("output_schema", '{"type":"object"}\x00')],
)
async def test_nul_in_submitted_text_is_invalid_argument_naming_the_field(
    start_execution: Any, fake_bids: Any, db_url: str, field: str, value: str
) -> None:
    bids, _ = fake_bids
    _, stub = await start_execution(database_url=db_url, workers=0)
    request = pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=bids.add_task())
    setattr(request, field, value)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitExecution(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    invalid = error_details(caught.value)
    assert (invalid.reason, invalid.fields) == ("INVALID_ARGUMENT", [field])
    assert bids.calls["GetTask"] == 0


async def test_nul_in_a_complete_prompt_is_invalid_argument_naming_the_field(
    start_execution: Any,
) -> None:
    _, stub = await start_execution()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(pb.CompleteRequest(prompt="a\x00b"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    invalid = error_details(caught.value)
    assert (invalid.reason, invalid.fields) == ("INVALID_ARGUMENT", ["prompt"])


async def test_nul_in_the_task_title_is_dropped_from_the_default_prompt(
    start_execution: Any, fake_bids: Any, db_url: str
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task(title="Haiku\x00 please")
    _, stub = await start_execution(database_url=db_url, workers=0)
    response = await stub.SubmitExecution(
        pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=task_id), timeout=10
    )
    assert response.execution.task_id == task_id
    # The default prompt (title and description) is stored without the NUL.
    prompt = await scalar(db_url, "SELECT prompt FROM executions")
    assert prompt == "Haiku please\n\nabout bids"
