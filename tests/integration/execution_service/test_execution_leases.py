"""Durable claiming: dead workers' executions are resumed; replicas never run one twice."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from bids_support import scalar
from marketplace.execution.v1 import execution_pb2 as pb
from marketplace_common.db import create_engine
from marketplace_common.migrations import upgrade_async
from marketplace_execution.migrations import MIGRATIONS_DIR
from marketplace_execution.storage.store import SqlExecutionStore

S = pb.ExecutionStatus


async def wait_terminal(stub: Any, execution_id: str, seconds: float = 30) -> pb.Execution:
    async with asyncio.timeout(seconds):
        while True:
            got = await stub.GetExecution(pb.GetExecutionRequest(execution_id=execution_id))
            if got.execution.status in (
                S.EXECUTION_STATUS_SUCCEEDED,
                S.EXECUTION_STATUS_FAILED,
                S.EXECUTION_STATUS_CANCELLED,
            ):
                execution: pb.Execution = got.execution
                return execution
            await asyncio.sleep(0.05)


async def test_execution_of_a_dead_worker_is_resumed_after_its_lease_expires(
    start_execution: Any, fake_bids: Any, sqlite_url: str
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    _, api = await start_execution(workers=0)
    submitted = (
        await api.SubmitExecution(
            pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=task_id)
        )
    ).execution
    engine = create_engine(sqlite_url)
    store = SqlExecutionStore(engine)
    claimed = await store.claim("dead-worker", 1, datetime.now(UTC), 1.5)
    await engine.dispose()
    assert [str(i) for i in claimed] == [submitted.execution_id]
    started = asyncio.get_running_loop().time()
    _, worker = await start_execution()
    final = await wait_terminal(worker, submitted.execution_id)
    assert final.status == S.EXECUTION_STATUS_SUCCEEDED
    assert asyncio.get_running_loop().time() - started >= 1.0
    assert bids.transitions[task_id] == ["StartTask", "CompleteTask"]


async def test_stopped_server_gives_its_lease_back_and_another_resumes(
    start_execution: Any, fake_bids: Any
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    first, stub = await start_execution(
        llm_offline_latency_seconds=30.0, lease_seconds=60.0, heartbeat_seconds=5.0
    )
    execution = (
        await stub.SubmitExecution(
            pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=task_id)
        )
    ).execution
    async with asyncio.timeout(10):
        while bids.calls["StartTask"] == 0:  # noqa: ASYNC110 (a counter in another server)
            await asyncio.sleep(0.05)
    await first.stop(0.2)
    _, second = await start_execution()
    final = await wait_terminal(second, execution.execution_id, seconds=10)
    assert final.status == S.EXECUTION_STATUS_SUCCEEDED
    assert bids.transitions[task_id] == ["StartTask", "CompleteTask"]


@pytest.mark.slow
async def test_two_replicas_run_each_of_200_executions_exactly_once(
    pg_url: str, fake_bids: Any, start_execution: Any
) -> None:
    bids, _ = fake_bids
    await upgrade_async(pg_url, MIGRATIONS_DIR)
    replicas = [
        await start_execution(database_url=pg_url, workers=16, llm_offline_latency_seconds=0.02)
        for _ in range(2)
    ]
    tasks = [bids.add_task() for _ in range(200)]
    ids = []
    for i, task_id in enumerate(tasks):
        stub = replicas[i % 2][1]
        request = pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=task_id)
        ids.append((await stub.SubmitExecution(request)).execution.execution_id)
    finals = [await wait_terminal(replicas[0][1], i, seconds=60) for i in ids]
    assert all(f.status == S.EXECUTION_STATUS_SUCCEEDED for f in finals)
    assert all([a.number for a in f.attempts] == [1] for f in finals)
    assert all(bids.transitions[t] == ["StartTask", "CompleteTask"] for t in tasks)
    assert bids.calls["StartTask"] == 200
    assert bids.calls["CompleteTask"] == 200
    claims = [server.pool.claimed_total for server, _ in replicas if server.pool is not None]
    assert len(claims) == 2  # both replicas run a worker pool
    assert sum(claims) == 200  # no execution was claimed (run) twice
    assert min(claims) > 0  # and both replicas did work
    # The database agrees: one stored attempt per execution, none twice.
    assert await scalar(pg_url, "SELECT count(*) FROM attempts") == 200
    assert await scalar(pg_url, "SELECT count(DISTINCT execution_id) FROM attempts") == 200
    succeeded = "SELECT count(*) FROM executions WHERE status = 'SUCCEEDED'"
    assert await scalar(pg_url, succeeded) == 200
