"""Two replicas on one PostgreSQL database, and streams that outlive their callers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from bids_support import scalar
from execution_support import (
    S,
    error_details,
    final_state,
    openai_settings,
    submit,
    wait_for_status,
)
from marketplace.bids.v1 import bids_pb2
from marketplace.common.v1 import common_pb2
from marketplace.execution.v1 import execution_pb2 as pb
from marketplace_common.migrations import upgrade_async
from marketplace_execution.migrations import MIGRATIONS_DIR


async def test_cancel_through_one_replica_stops_a_run_on_another(
    start_execution: Any, fake_bids: Any, pg_url: str
) -> None:
    bids, _ = fake_bids
    await upgrade_async(pg_url, MIGRATIONS_DIR)
    task_id = bids.add_task()
    _, worker = await start_execution(database_url=pg_url, llm_offline_latency_seconds=30.0)
    _, api_only = await start_execution(database_url=pg_url, workers=0, cancel_wait_seconds=10)
    execution = await submit(api_only, task_id)
    await wait_for_status(worker, execution.execution_id, S.EXECUTION_STATUS_RUNNING)
    started = time.monotonic()
    reply = await api_only.CancelExecution(
        pb.CancelExecutionRequest(execution_id=execution.execution_id), timeout=15
    )
    # Only the worker replica can end the 30 s call: its heartbeat (0.5 s) saw the cancel.
    assert reply.execution.status == S.EXECUTION_STATUS_CANCELLED
    assert time.monotonic() - started < 5
    assert bids.transitions[task_id] == ["StartTask", "FailTask"]
    assert "cancelled" in bids.fail_messages[task_id]


@pytest.mark.slow
async def test_concurrent_submits_for_one_task_on_two_replicas_queue_exactly_one(
    start_execution: Any, fake_bids: Any, pg_url: str
) -> None:
    bids, _ = fake_bids
    await upgrade_async(pg_url, MIGRATIONS_DIR)
    task_id = bids.add_task()
    stubs = [(await start_execution(database_url=pg_url, workers=0))[1] for _ in range(2)]
    results = await asyncio.gather(
        *(submit(stubs[i % 2], task_id) for i in range(20)), return_exceptions=True
    )
    ok = [r for r in results if isinstance(r, pb.Execution)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 1, results
    assert len(failed) == 19, results
    losers = Counter((e.code(), error_details(e).reason) for e in failed)
    assert losers == {(grpc.StatusCode.ALREADY_EXISTS, "EXECUTION_ALREADY_ACTIVE"): 19}
    assert await scalar(pg_url, "SELECT count(*) FROM executions") == 1
    stored = await scalar(pg_url, "SELECT CAST(execution_id AS TEXT) FROM executions")
    assert stored == ok[0].execution_id


async def test_watch_unsubscribes_when_the_client_goes_away(
    start_execution: Any, fake_bids: Any
) -> None:
    bids, _ = fake_bids
    server, stub = await start_execution(llm_offline_latency_seconds=30.0)
    execution = await submit(stub, bids.add_task())
    execution_id = uuid.UUID(execution.execution_id)
    call = stub.WatchExecution(pb.WatchExecutionRequest(execution_id=execution.execution_id))
    await call.read()  # the first event: the server is subscribed now
    bus = server.service._bus
    assert bus.subscriber_count(execution_id) == 1
    call.cancel()
    for _ in range(250):
        if bus.subscriber_count(execution_id) == 0:
            break
        await asyncio.sleep(0.02)
    assert bus.subscriber_count(execution_id) == 0


async def _read_to_the_end(events: AsyncIterator[Any]) -> None:
    async for _ in events:
        pass


async def test_a_watch_ends_with_unavailable_when_the_server_stops(
    start_execution: Any, fake_bids: Any
) -> None:
    bids, _ = fake_bids
    server, stub = await start_execution(llm_offline_latency_seconds=30.0)
    execution = await submit(stub, bids.add_task())
    call = stub.WatchExecution(pb.WatchExecutionRequest(execution_id=execution.execution_id))
    events = aiter(call)
    await anext(events)  # subscribed; the execution runs for 30 s
    started = time.monotonic()
    stopping = asyncio.create_task(server.stop(10.0))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _read_to_the_end(events)
    # Ended by the stop, not by the 10 s grace running out.
    assert time.monotonic() - started < 5
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    unavailable = error_details(caught.value)
    assert (unavailable.reason, unavailable.error_type) == ("UNAVAILABLE", "TRANSIENT")
    assert unavailable.retry_delay == pytest.approx(1.0)
    await stopping


async def test_unauthorized_openai_key_fails_the_execution_and_the_task_after_one_attempt(
    start_execution: Any, fake_bids: Any, openai_server: Any
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    openai_server.fail(401, "Incorrect API key provided", code="invalid_api_key")
    _, stub = await start_execution(**openai_settings(openai_server))
    execution = await submit(stub, task_id, max_attempts=5)
    final = await final_state(stub, execution.execution_id)
    assert final.status == S.EXECUTION_STATUS_FAILED
    assert final.error_type == common_pb2.ERROR_TYPE_PERMANENT
    assert [a.error_type for a in final.attempts] == [common_pb2.ERROR_TYPE_PERMANENT]
    assert [a.code for a in final.attempts] == ["401"]
    assert len(openai_server.requests) == 1
    assert bids.transitions[task_id] == ["StartTask", "FailTask"]
    assert bids.tasks[task_id].status == bids_pb2.TASK_STATUS_FAILED
