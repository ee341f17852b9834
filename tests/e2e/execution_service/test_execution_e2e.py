"""End to end over real gRPC: bids + execution, from a task to its delivery."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import grpc.aio
from marketplace.bids.v1 import bids_pb2
from marketplace.common.v1 import common_pb2
from marketplace.execution.v1 import execution_pb2 as pb
from marketplace.execution.v1 import execution_pb2_grpc
from marketplace_common.migrations import upgrade_async
from marketplace_execution.migrations import MIGRATIONS_DIR
from marketplace_execution.server import create_server
from marketplace_execution.settings import ExecutionSettings

CLIENT_EMAIL = "alice@example.com"


async def create_task(stack: Any, channel: grpc.aio.Channel) -> str:
    request = bids_pb2.CreateTaskRequest(
        request_id=str(uuid.uuid4()),
        client_email=CLIENT_EMAIL,
        title="Summarise the bids",
        description="Three sentences, please.",
        budget=common_pb2.Money(currency_code="EUR", units=12, nanos=500_000_000),
    )
    response = await stack.client_stub(channel).CreateTask(
        request, metadata=stack.client_metadata, timeout=10
    )
    return str(response.task.task_id)


async def test_submitted_task_is_completed_and_delivered(bids_stack: Any, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'execution.db'}"
    await upgrade_async(url, MIGRATIONS_DIR)
    settings = ExecutionSettings(
        grpc_port=0,
        metrics_port=0,
        database_url=url,
        bids_target=bids_stack.target,
        bids_token=bids_stack.service_token,
        poll_seconds=0.1,
        watch_poll_seconds=0.2,
    )
    server, port = await create_server(settings)
    try:
        async with (
            grpc.aio.insecure_channel(bids_stack.target) as bids_channel,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            task_id = await create_task(bids_stack, bids_channel)
            stub = execution_pb2_grpc.ExecutionServiceStub(channel)
            submitted = await stub.SubmitExecution(
                pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=task_id)
            )
            stream = stub.WatchExecution(
                pb.WatchExecutionRequest(execution_id=submitted.execution.execution_id),
                timeout=30,
            )
            events = [r.event async for r in stream]
            final = events[-1].execution
            assert final.status == pb.EXECUTION_STATUS_SUCCEEDED

            bids = bids_stack.client_stub(bids_channel)
            meta = bids_stack.client_metadata
            task = (
                await bids.GetTask(bids_pb2.GetTaskRequest(task_id=task_id), metadata=meta)
            ).task
            assert task.status == bids_pb2.TASK_STATUS_COMPLETED
            assert task.result == final.result
            assert task.execution_id == final.execution_id
            token = await bids.CreateDeliveryToken(
                bids_pb2.CreateDeliveryTokenRequest(task_id=task_id), metadata=meta
            )
            delivery = await bids.GetDelivery(
                bids_pb2.GetDeliveryRequest(token=token.token), metadata=meta
            )
            assert delivery.delivery.result == final.result
            assert delivery.delivery.amount.units == 12
    finally:
        await server.stop(0.5)
