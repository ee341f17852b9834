"""SIGKILL the execution service mid-run, start it again: the execution finishes and
the task is completed exactly once."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import grpc.aio
import pytest
from marketplace.bids.v1 import bids_pb2
from marketplace.common.v1 import common_pb2
from marketplace.execution.v1 import execution_pb2 as pb
from marketplace_common.db import create_engine
from marketplace_common.migrations import upgrade_async
from marketplace_execution.migrations import MIGRATIONS_DIR
from sqlalchemy import text

CLIENT_EMAIL = "alice@example.com"
TERMINAL = (
    pb.EXECUTION_STATUS_SUCCEEDED,
    pb.EXECUTION_STATUS_FAILED,
    pb.EXECUTION_STATUS_CANCELLED,
)


async def _until(predicate: Any, seconds: float) -> Any:
    async with asyncio.timeout(seconds):
        while True:
            value = await predicate()
            if value:
                return value
            await asyncio.sleep(0.1)


async def _task_transitions(bids_url: str, task_id: str) -> list[str]:
    engine = create_engine(bids_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT new_status FROM task_events WHERE task_id = :t ORDER BY created_at"),
                {"t": task_id},
            )
            return [str(r[0]) for r in rows]
    finally:
        await engine.dispose()


@pytest.mark.slow
async def test_killed_service_resumes_and_completes_the_task_once(
    bids_stack: Any, execution_process: Any, tmp_path: Path, free_port: int
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'execution.db'}"
    await upgrade_async(url, MIGRATIONS_DIR)
    port = free_port
    env = {
        "EXECUTION_GRPC_PORT": str(port),
        "EXECUTION_METRICS_PORT": "0",
        "EXECUTION_DATABASE_URL": url,
        "EXECUTION_BIDS_TARGET": bids_stack.target,
        "EXECUTION_BIDS_TOKEN": bids_stack.service_token,
        "EXECUTION_LLM_OFFLINE_LATENCY_SECONDS": "3",
        "EXECUTION_LEASE_SECONDS": "2",
        "EXECUTION_HEARTBEAT_SECONDS": "0.5",
        "EXECUTION_POLL_SECONDS": "0.2",
        "EXECUTION_LOG_JSON": "true",
    }
    first = execution_process(env, tmp_path / "execution.log")
    first.start()
    async with (
        grpc.aio.insecure_channel(bids_stack.target) as bids_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        await asyncio.wait_for(channel.channel_ready(), 30)
        bids = bids_stack.client_stub(bids_channel)
        task = await bids.CreateTask(
            bids_pb2.CreateTaskRequest(
                request_id=str(uuid.uuid4()),
                client_email=CLIENT_EMAIL,
                title="Crash test",
                description="survive a SIGKILL",
                budget=common_pb2.Money(currency_code="EUR", units=5),
            ),
            metadata=bids_stack.client_metadata,
        )
        task_id = task.task.task_id
        stub = first.stub(channel)
        submitted = await stub.SubmitExecution(
            pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=task_id)
        )
        execution_id = submitted.execution.execution_id

        async def running() -> bool:
            got = await stub.GetExecution(pb.GetExecutionRequest(execution_id=execution_id))
            return bool(got.execution.status == pb.EXECUTION_STATUS_RUNNING)

        await _until(running, 20)
        first.kill()  # SIGKILL, mid-call: the LLM answer takes 3 s
        assert await _task_transitions(bids_stack.database_url, task_id) == ["PROCESSING"]

        second = execution_process(env, tmp_path / "execution.log")
        second.start()
        await asyncio.wait_for(channel.channel_ready(), 30)

        async def finished() -> pb.Execution | None:
            try:
                got = await stub.GetExecution(pb.GetExecutionRequest(execution_id=execution_id))
            except grpc.aio.AioRpcError:
                return None
            return got.execution if got.execution.status in TERMINAL else None

        final = await _until(finished, 30)
    assert final.status == pb.EXECUTION_STATUS_SUCCEEDED
    assert await _task_transitions(bids_stack.database_url, task_id) == ["PROCESSING", "COMPLETED"]
