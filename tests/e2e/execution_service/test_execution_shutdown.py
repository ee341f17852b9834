"""SIGTERM on ``execution-service serve`` takes ONE shutdown grace in all: claiming stops at
once, in-flight calls and running executions drain together, the rest is handed back."""

from __future__ import annotations

import asyncio
import signal
import time
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

GRACE_S = 4
WORKERS = 2
SUBMITTED = 6


async def _rows(url: str) -> dict[str, tuple[str, str | None, object]]:
    """execution_id -> (status, lease_owner, heartbeat_at), read from the database."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT execution_id, status, lease_owner, heartbeat_at FROM executions")
            )
            return {str(r[0]): (str(r[1]), r[2], r[3]) for r in rows}
    finally:
        await engine.dispose()


async def _until(predicate: Any, seconds: float) -> Any:
    async with asyncio.timeout(seconds):
        while True:
            value = await predicate()
            if value:
                return value
            await asyncio.sleep(0.05)


async def _submit_all(bids_stack: Any, stub: Any, bids_channel: grpc.aio.Channel) -> None:
    bids = bids_stack.client_stub(bids_channel)
    for n in range(SUBMITTED):
        task = await bids.CreateTask(
            bids_pb2.CreateTaskRequest(
                request_id=str(uuid.uuid4()),
                client_email="alice@example.com",
                title=f"Shutdown {n}",
                description="drain within one grace",
                budget=common_pb2.Money(currency_code="EUR", units=5),
            ),
            metadata=bids_stack.client_metadata,
        )
        await stub.SubmitExecution(
            pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=task.task.task_id)
        )


async def _stop_during_work(
    bids_stack: Any, execution_process: Any, tmp_path: Path, port: int, latency: float
) -> tuple[float, set[str], dict[str, tuple[str, str | None, object]]]:
    """Start the service, keep it busy (executions running, a Complete call in flight),
    SIGTERM it; how long it took to exit, what was claimed before, the rows after."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'execution.db'}"
    await upgrade_async(url, MIGRATIONS_DIR)
    env = {
        "EXECUTION_GRPC_PORT": str(port),
        "EXECUTION_METRICS_PORT": "0",
        "EXECUTION_DATABASE_URL": url,
        "EXECUTION_BIDS_TARGET": bids_stack.target,
        "EXECUTION_BIDS_TOKEN": bids_stack.service_token,
        "EXECUTION_LLM_PROVIDER": "offline",
        "EXECUTION_LLM_OFFLINE_LATENCY_SECONDS": str(latency),
        "EXECUTION_WORKERS": str(WORKERS),
        "EXECUTION_SHUTDOWN_GRACE_SECONDS": str(GRACE_S),
        "EXECUTION_LEASE_SECONDS": "30",
        "EXECUTION_HEARTBEAT_SECONDS": "1",
        "EXECUTION_POLL_SECONDS": "0.1",
        "EXECUTION_LOG_JSON": "true",
    }
    process = execution_process(env, tmp_path / "execution.log")
    process.start()
    async with (
        grpc.aio.insecure_channel(bids_stack.target) as bids_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        await asyncio.wait_for(channel.channel_ready(), 60)
        stub = process.stub(channel)
        await _submit_all(bids_stack, stub, bids_channel)

        async def pool_full() -> bool:
            rows = await _rows(url)
            return sum(1 for s, _, _ in rows.values() if s == "RUNNING") == WORKERS

        await _until(pool_full, 30)
        # A call that holds the server's drain: the LLM answers after `latency`.
        complete = asyncio.ensure_future(stub.Complete(pb.CompleteRequest(prompt="hold on")))
        await asyncio.sleep(0.3)
        claimed = {eid for eid, (_, owner, _) in (await _rows(url)).items() if owner is not None}
        assert process.proc is not None
        signalled = time.monotonic()
        process.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.proc.wait, 30)
        took = time.monotonic() - signalled
        complete.cancel()
        await asyncio.gather(complete, return_exceptions=True)
    assert code == 0, (tmp_path / "execution.log").read_text()[-3000:]
    return took, claimed, await _rows(url)


@pytest.mark.slow
async def test_running_executions_finish_in_the_grace_and_nothing_is_claimed_after_sigterm(
    bids_stack: Any, execution_process: Any, tmp_path: Path, free_port: int
) -> None:
    # Each execution's LLM call takes 2.5 s: the running ones finish within the grace,
    # which frees workers while the Complete call still drains.
    took, claimed, rows = await _stop_during_work(
        bids_stack, execution_process, tmp_path, free_port, latency=2.5
    )
    assert took < GRACE_S + 3
    assert len(claimed) == WORKERS
    ever_claimed = {eid for eid, (_, _, heartbeat) in rows.items() if heartbeat is not None}
    assert ever_claimed == claimed
    assert {rows[eid][0] for eid in claimed} == {"SUCCEEDED"}
    assert sorted(s for eid, (s, _, _) in rows.items() if eid not in claimed) == ["QUEUED"] * (
        SUBMITTED - WORKERS
    )


@pytest.mark.slow
async def test_executions_still_running_after_the_grace_are_handed_back_within_it(
    bids_stack: Any, execution_process: Any, tmp_path: Path, free_port: int
) -> None:
    # The LLM takes 60 s: neither the executions nor the Complete call finish in the grace.
    took, claimed, rows = await _stop_during_work(
        bids_stack, execution_process, tmp_path, free_port, latency=60
    )
    assert took < GRACE_S + 3
    assert len(claimed) == WORKERS
    # Handed back: no lease owner, still active, for another replica to resume.
    assert {rows[eid][:2] for eid in claimed} == {("RUNNING", None)}
    ever_claimed = {eid for eid, (_, _, heartbeat) in rows.items() if heartbeat is not None}
    assert ever_claimed == claimed
