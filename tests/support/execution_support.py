"""Helpers of the execution service's integration tests: calls and error details."""

from __future__ import annotations

import asyncio
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from marketplace.execution.v1 import execution_pb2 as pb

S = pb.ExecutionStatus


@dataclass
class ErrorDetails:
    """What a google.rpc.Status carried: ErrorInfo, RetryInfo and BadRequest."""

    reason: str = ""
    error_type: str = ""
    retry_delay: float | None = None
    fields: list[str] = field(default_factory=list)


def error_details(exc: grpc.aio.AioRpcError) -> ErrorDetails:
    """The decoded details of a failed call."""
    found = ErrorDetails()
    metadata: Any = exc.trailing_metadata() or ()
    for key, value in metadata:
        if key != "grpc-status-details-bin":
            continue
        for detail in status_pb2.Status.FromString(value).details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                found.reason, found.error_type = info.reason, info.metadata["errorType"]
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                found.retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                found.fields = [v.field for v in bad.field_violations]
    return found


async def submit(stub: Any, task_id: str, **fields: Any) -> pb.Execution:
    request = pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=task_id, **fields)
    response = await stub.SubmitExecution(request, timeout=10)
    execution: pb.Execution = response.execution
    return execution


async def watch_all(stub: Any, execution_id: str, seconds: float = 30) -> list[pb.ExecutionEvent]:
    stream = stub.WatchExecution(
        pb.WatchExecutionRequest(execution_id=execution_id), timeout=seconds
    )
    return [response.event async for response in stream]


async def final_state(stub: Any, execution_id: str, seconds: float = 15) -> pb.Execution:
    """The execution once terminal (the watch fails the test after ``seconds``)."""
    final: pb.Execution = (await watch_all(stub, execution_id, seconds))[-1].execution
    return final


async def wait_for_status(stub: Any, execution_id: str, status: int, seconds: float = 10) -> None:
    """Polls GetExecution until the execution has ``status``."""
    async with asyncio.timeout(seconds):
        while True:
            got = await stub.GetExecution(pb.GetExecutionRequest(execution_id=execution_id))
            if got.execution.status == status:
                return
            await asyncio.sleep(0.05)


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def openai_settings(server: Any) -> dict[str, Any]:
    """Settings overrides that point the service's openai provider at ``server``."""
    return {
        "llm_provider": "openai",
        "llm_base_url": server.base_url,
        "llm_model": "fake-model",
        "llm_api_key": "sk-test-not-a-real-key",
        "llm_timeout_seconds": 10.0,
    }
