"""The execution service's own metrics: queue gauges from the database (the same on
every replica), finished runs by status, takeovers, lease losses and bids retries."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from marketplace.execution.v1 import execution_pb2 as pb
from marketplace_common.db import create_engine
from marketplace_execution.domain.metrics import QueueMonitor
from marketplace_execution.domain.ports import Lease
from marketplace_execution.metrics import PrometheusExecutionMetrics
from marketplace_execution.server import ExecutionServer
from marketplace_execution.storage.store import SqlExecutionStore
from marketplace_execution.storage.tables import ExecutionRow
from sqlalchemy import update

NewExecutionFactory = Any

S = pb.ExecutionStatus


def sample(server: ExecutionServer, name: str, **labels: str) -> float:
    return server.grpc.metrics.value(name, **labels)


def gauge(metrics: PrometheusExecutionMetrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


async def eventually(check: Any, seconds: float = 15.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():  # noqa: ASYNC110 (a metric of a server in this loop)
            await asyncio.sleep(0.05)


async def test_queue_gauges_are_read_from_the_database_alike_on_every_replica(
    store: SqlExecutionStore, new_execution: NewExecutionFactory
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    for age in (30, 10, 5):
        await store.create(new_execution(created_at=now - timedelta(seconds=age)))
    # A worker takes the oldest; its lease is good for a minute.
    assert len(await store.claim("worker-1", 1, now, 60.0)) == 1
    replicas = [PrometheusExecutionMetrics(), PrometheusExecutionMetrics()]
    for metrics in replicas:
        await QueueMonitor(store, metrics, lambda: now, interval=60).refresh()
    for metrics in replicas:
        assert gauge(metrics, "execution_queue_depth") == 2
        assert gauge(metrics, "execution_queue_oldest_age_seconds") == 10.0
    # Its lease expires unrenewed: it waits again (the oldest waiting is still now-10 s).
    later = now + timedelta(seconds=90)
    await QueueMonitor(store, replicas[0], lambda: later, interval=60).refresh()
    assert gauge(replicas[0], "execution_queue_depth") == 3
    assert (
        gauge(replicas[0], "execution_queue_oldest_age_seconds") == 100.0
    )  # the one created at now-10 s
    # Everything taken: nothing waits, the age is 0.
    assert len(await store.claim("worker-2", 10, later, 60.0)) == 3
    await QueueMonitor(store, replicas[0], lambda: later, interval=60).refresh()
    assert gauge(replicas[0], "execution_queue_depth") == 0
    assert gauge(replicas[0], "execution_queue_oldest_age_seconds") == 0.0


async def test_a_claim_counts_executions_taken_over_from_an_expired_lease(
    store: SqlExecutionStore, new_execution: NewExecutionFactory
) -> None:
    now = datetime.now(UTC)
    for _ in range(3):
        await store.create(new_execution(created_at=now - timedelta(seconds=5)))
    first = await store.claim("dead-worker", 2, now, 1.0)
    assert (len(first), first.taken_over) == (2, 0)
    released = first[0]
    await store.release(released, Lease("dead-worker", first.epochs[released]))
    # One released (free again), one expired in dead-worker's hands, one never claimed.
    second = await store.claim("worker-2", 10, now + timedelta(seconds=5), 30.0)
    assert len(second) == 3
    assert second.taken_over == 1


async def test_takeover_and_finished_runs_are_counted_by_the_server(
    start_execution: Any, fake_bids: Any, sqlite_url: str
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    _, api = await start_execution(workers=0)
    await api.SubmitExecution(
        pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=task_id)
    )
    engine = create_engine(sqlite_url)
    store = SqlExecutionStore(engine)
    await store.claim("dead-worker", 1, datetime.now(UTC), 0.5)
    await engine.dispose()
    worker, _ = await start_execution()
    await eventually(lambda: sample(worker, "executions_finished_total", status="SUCCEEDED") == 1)
    assert sample(worker, "execution_takeovers_total") == 1
    assert sample(worker, "executions_finished_total", status="FAILED") == 0
    assert sample(worker, "execution_lease_lost_total") == 0


async def test_bids_call_retries_are_counted_by_call(start_execution: Any, fake_bids: Any) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    # More failures than the channel's own UNAVAILABLE retries (4 attempts a call) absorb.
    bids.fail_next["StartTask"] = 8
    server, api = await start_execution()
    await api.SubmitExecution(
        pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=task_id)
    )
    await eventually(lambda: sample(server, "executions_finished_total", status="SUCCEEDED") == 1)
    assert sample(server, "execution_bids_call_retries_total", call="StartTask") >= 1
    assert sample(server, "execution_bids_call_retries_total", call="CompleteTask") == 0


async def test_a_lease_taken_by_another_worker_is_counted_as_lost(
    start_execution: Any, fake_bids: Any, sqlite_url: str
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    server, api = await start_execution(llm_offline_latency_seconds=30.0)
    submitted = (
        await api.SubmitExecution(
            pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=task_id)
        )
    ).execution
    await eventually(lambda: bids.calls["StartTask"] > 0)
    # Another worker owns it now (as after a heartbeat that came too late).
    engine = create_engine(sqlite_url)
    async with engine.begin() as conn:
        await conn.execute(
            update(ExecutionRow)
            .where(ExecutionRow.execution_id == uuid.UUID(submitted.execution_id))
            .values(
                lease_owner="another-worker",
                lease_expires_at=datetime.now(UTC) + timedelta(minutes=5),
            )
        )
    await engine.dispose()
    await eventually(lambda: sample(server, "execution_lease_lost_total") == 1)
    assert server.pool is not None
    await eventually(lambda: not server.pool.running if server.pool else True)
    assert sample(server, "executions_finished_total", status="SUCCEEDED") == 0
