"""Benchmark 1b of execution_bench.py: the execution path with an in-process fake BidService.

An API-only execution server (``workers=0``) takes the SubmitExecution calls,
so the executions wait QUEUED; then a second server on the same database with
``workers`` >= the number of executions starts, and the clock runs from its
start until the last execution is terminal. The execution service is real
(its servers, worker pool, store and BidService client over real gRPC); the
LLM is the offline provider and BidService is NOT the bids service: it is
``BenchBidService`` below, an in-process fake on a real gRPC port that
answers every call at once without a database. This row therefore leaves
out the bids service's own cost of StartTask and CompleteTask; it is not the
full path of the two services.
"""

from __future__ import annotations

import asyncio
import resource
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from marketplace.execution.v1 import execution_pb2, execution_pb2_grpc
from marketplace_common.db import create_engine
from marketplace_common.migrations import upgrade_async
from marketplace_common.paging import PageCursor
from marketplace_execution.domain.models import Execution, ExecutionStatus
from marketplace_execution.migrations import MIGRATIONS_DIR
from marketplace_execution.server import create_server
from marketplace_execution.settings import ExecutionSettings
from marketplace_execution.storage.store import SqlExecutionStore

LEASE_SECONDS = 10.0
"""Short, so a run that lost its turn (see ``resumed``) is picked up again within the bench."""

LagProbe = Callable[[list[float], asyncio.Event], Coroutine[Any, Any, None]]


class BenchBidService(bids_pb2_grpc.BidServiceServicer):
    """Every task exists and is PENDING until started; transitions always succeed."""

    def __init__(self) -> None:
        self.completed = 0

    def _task(self, task_id: str, status: Any) -> bids_pb2.Task:
        return bids_pb2.Task(task_id=task_id, title="Estimate", description="a job", status=status)

    async def GetTask(self, request: Any, context: Any) -> Any:
        task = self._task(request.task_id, bids_pb2.TASK_STATUS_PENDING)
        return bids_pb2.GetTaskResponse(task=task)

    async def StartTask(self, request: Any, context: Any) -> Any:
        task = self._task(request.task_id, bids_pb2.TASK_STATUS_PROCESSING)
        return bids_pb2.StartTaskResponse(task=task)

    async def CompleteTask(self, request: Any, context: Any) -> Any:
        self.completed += 1
        task = self._task(request.task_id, bids_pb2.TASK_STATUS_COMPLETED)
        return bids_pb2.CompleteTaskResponse(task=task)

    async def FailTask(self, request: Any, context: Any) -> Any:
        task = self._task(request.task_id, bids_pb2.TASK_STATUS_FAILED)
        return bids_pb2.FailTaskResponse(task=task)


@dataclass
class ServicePathResult:
    runs: int
    delay: float
    wall: float
    lag_p99: float
    lag_max: float
    peak_rss_mb: float
    succeeded: int
    describe: str
    resumed: int
    phases: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.wall / self.delay


def _settings(url: str, bids_target: str, workers: int, delay: float) -> ExecutionSettings:
    return ExecutionSettings(
        grpc_port=0,
        metrics_port=0,
        database_url=url,
        bids_target=bids_target,
        workers=workers,
        pacing_delay_seconds=delay,
        pacing_jitter=0.1,
        lease_seconds=LEASE_SECONDS,
        heartbeat_seconds=2.0,
        poll_seconds=0.2,
        log_level="ERROR",
    )


async def _submit_all(target: str, runs: int) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = execution_pb2_grpc.ExecutionServiceStub(channel)
        semaphore = asyncio.Semaphore(50)

        async def one() -> None:
            async with semaphore:
                request = execution_pb2.SubmitExecutionRequest(
                    request_id=str(uuid.uuid4()), task_id=str(uuid.uuid4())
                )
                await stub.SubmitExecution(request, timeout=60)

        await asyncio.gather(*(one() for _ in range(runs)))


async def _all_executions(store: SqlExecutionStore) -> list[Execution]:
    found: list[Execution] = []
    after = None
    while True:
        page = list(await store.list_page(task_id=None, status=None, after=after, limit=500))
        found += page
        if len(page) < 500:
            return found
        after = PageCursor(page[-1].created_at, page[-1].execution_id)


async def _wait_terminal(bids: BenchBidService, store: SqlExecutionStore, runs: int) -> None:
    while True:
        if bids.completed >= runs:
            break
        await asyncio.sleep(0.02)
    while True:  # CompleteTask landed; the execution turns terminal right after
        done = await store.list_page(
            task_id=None, status=ExecutionStatus.RUNNING, after=None, limit=1
        )
        if not done:
            return
        await asyncio.sleep(0.02)


def _phases(executions: list[Execution], started_wall: float) -> dict[str, list[float]]:
    before, pacing, after = [], [], []
    for execution in executions:
        if not execution.attempts:
            continue
        attempt = execution.attempts[-1]
        until_call = attempt.started_at.timestamp() - started_wall
        before.append(until_call - attempt.pacing_delay)
        pacing.append(attempt.pacing_delay)
        after.append(execution.updated_at.timestamp() - attempt.finished_at.timestamp())
    return {
        "claim + StartTask + status write (before pacer)": before,
        "pacing wait (delay, jitter, slot)": pacing,
        "attempt + decide writes, CompleteTask, finish": after,
    }


async def bench_service_path(
    runs: int, delay: float, database_url: str | None, lag_probe: LagProbe
) -> ServicePathResult:
    """Runs 1b and returns its figures (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        await upgrade_async(url, MIGRATIONS_DIR)
        bids = BenchBidService()  # type: ignore[abstract]  # only what the service calls
        bids_server = grpc.aio.server(
            options=[
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ]
        )
        bids_pb2_grpc.add_BidServiceServicer_to_server(bids, bids_server)
        bids_target = f"127.0.0.1:{bids_server.add_insecure_port('127.0.0.1:0')}"
        await bids_server.start()
        api, api_port = await create_server(_settings(url, bids_target, 0, delay))
        await _submit_all(f"127.0.0.1:{api_port}", runs)
        engine = create_engine(url)
        store = SqlExecutionStore(engine)
        lags: list[float] = []
        stop = asyncio.Event()
        probe = asyncio.create_task(lag_probe(lags, stop))
        await asyncio.sleep(0.05)
        started, started_wall = time.perf_counter(), time.time()
        worker, _ = await create_server(_settings(url, bids_target, max(runs, 1000), delay))
        await _wait_terminal(bids, store, runs)
        wall = time.perf_counter() - started
        stop.set()
        await probe
        executions = await _all_executions(store)
        for server in (worker, api):
            await server.stop(1.0)
        await engine.dispose()
        await bids_server.stop(0)
    lags.sort()
    phases = _phases(executions, started_wall)
    backend = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    return ServicePathResult(
        runs=runs,
        delay=delay,
        wall=wall,
        lag_p99=lags[int(len(lags) * 0.99) - 1],
        lag_max=lags[-1],
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        succeeded=sum(e.status is ExecutionStatus.SUCCEEDED for e in executions),
        describe=(
            f"{backend} store (engine pool 20 + 10 overflow), workers {max(runs, 1000)}, "
            f"lease {LEASE_SECONDS:.0f} s, "
            "in-process fake BidService over gRPC (not the bids service)"
        ),
        resumed=sum(
            1
            for v in phases["claim + StartTask + status write (before pacer)"]
            if v > LEASE_SECONDS
        ),
        phases=phases,
    )
