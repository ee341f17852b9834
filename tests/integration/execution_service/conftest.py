"""Fixtures of the execution service's integration tests: migrated databases and a store."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import grpc.aio
import pytest
from fake_openai import FakeOpenAIServer
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from marketplace.execution.v1 import execution_pb2_grpc
from marketplace_common.db import create_engine
from marketplace_common.migrations import upgrade, upgrade_async
from marketplace_execution.domain.models import NewExecution
from marketplace_execution.domain.ports import JobRunner
from marketplace_execution.migrations import MIGRATIONS_DIR
from marketplace_execution.server import ExecutionServer, create_server
from marketplace_execution.settings import ExecutionSettings
from marketplace_execution.storage.store import SqlExecutionStore
from sqlalchemy.ext.asyncio import AsyncEngine


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated database of each backend."""
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    upgrade(url, MIGRATIONS_DIR)
    return url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def store(engine: AsyncEngine) -> SqlExecutionStore:
    return SqlExecutionStore(engine)


def _new_execution(task_id: uuid.UUID | None = None, **overrides: object) -> NewExecution:
    """A NewExecution with fresh ids."""
    values: dict[str, object] = {
        "execution_id": uuid.uuid4(),
        "task_id": task_id or uuid.uuid4(),
        "request_id": uuid.uuid4(),
        "request_fingerprint": "f" * 64,
        "prompt": "write a haiku",
        "model": "offline-echo-1",
        "output_schema": None,
        "max_attempts": 3,
        "created_at": datetime.now(UTC),
    }
    values.update(overrides)
    return NewExecution(**values)  # type: ignore[arg-type]


NewExecutionFactory = Callable[..., NewExecution]


@pytest.fixture
def new_execution() -> NewExecutionFactory:
    """Makes NewExecution values with fresh ids (keyword overrides)."""
    return _new_execution


# --- a fake BidService (real gRPC, tests only) --------------------------------------


class FakeBidService(bids_pb2_grpc.BidServiceServicer):
    """Tasks in memory; Start/Complete/Fail idempotent on event_id, like the real one.

    ``transitions[task_id]`` lists every applied transition (a replayed event_id is
    not applied twice); ``calls`` counts every call by RPC name; ``fail_next``
    makes the next calls of an RPC answer UNAVAILABLE; ``refuse`` names RPCs that
    answer FAILED_PRECONDITION for good. Like the real BidService it refuses a
    result over 100,000 characters and control characters in a FailTask message.
    """

    def __init__(self) -> None:
        self.tasks: dict[str, bids_pb2.Task] = {}
        self.events: dict[str, str] = {}
        self.transitions: dict[str, list[str]] = {}
        self.calls: Counter[str] = Counter()
        self.fail_next: Counter[str] = Counter()
        self.fail_messages: dict[str, str] = {}
        self.refuse: set[str] = set()

    def add_task(self, title: str = "Write a haiku", description: str = "about bids") -> str:
        task_id = str(uuid.uuid4())
        self.tasks[task_id] = bids_pb2.Task(
            task_id=task_id, title=title, description=description, status="TASK_STATUS_PENDING"
        )
        self.transitions[task_id] = []
        return task_id

    async def _enter(self, rpc: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.calls[rpc] += 1
        if self.fail_next[rpc] > 0:
            self.fail_next[rpc] -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "fake outage")
        if rpc in self.refuse:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{rpc} refused")

    async def _task(self, task_id: str, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        task = self.tasks.get(task_id)
        if task is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"task {task_id} not found")
        return task

    async def GetTask(self, request: Any, context: Any) -> Any:
        await self._enter("GetTask", context)
        return bids_pb2.GetTaskResponse(task=await self._task(request.task_id, context))

    async def _transition(
        self, rpc: str, request: Any, context: Any, allowed: tuple[int, ...], new: int
    ) -> Any:
        await self._enter(rpc, context)
        task = await self._task(request.task_id, context)
        if request.event_id in self.events:
            return task
        if task.status not in allowed:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "wrong task state")
        task.status = new
        task.execution_id = request.execution_id
        self.events[request.event_id] = rpc
        self.transitions[request.task_id].append(rpc)
        return task

    async def StartTask(self, request: Any, context: Any) -> Any:
        task = await self._transition(
            "StartTask",
            request,
            context,
            (bids_pb2.TASK_STATUS_PENDING,),
            bids_pb2.TASK_STATUS_PROCESSING,
        )
        return bids_pb2.StartTaskResponse(task=task)

    async def CompleteTask(self, request: Any, context: Any) -> Any:
        if len(request.result) > 100_000:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "result: too long")
        task = await self._transition(
            "CompleteTask",
            request,
            context,
            (bids_pb2.TASK_STATUS_PROCESSING,),
            bids_pb2.TASK_STATUS_COMPLETED,
        )
        task.result = request.result
        return bids_pb2.CompleteTaskResponse(task=task)

    async def FailTask(self, request: Any, context: Any) -> Any:
        if any(ord(c) < 32 and c not in "\n\r\t" for c in request.message):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "message: control characters")
        allowed = (bids_pb2.TASK_STATUS_PROCESSING,)  # docs/design.md: PROCESSING -> FAILED
        task = await self._transition(
            "FailTask", request, context, allowed, bids_pb2.TASK_STATUS_FAILED
        )
        task.result = request.message
        self.fail_messages[request.task_id] = request.message
        return bids_pb2.FailTaskResponse(task=task)


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """The fake OpenAI server (real HTTP), for the service with ``llm_provider="openai"``."""
    server = FakeOpenAIServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def fake_bids() -> AsyncIterator[tuple[FakeBidService, str]]:
    """The fake BidService on a real port; yields it and its target."""
    servicer = FakeBidService()  # type: ignore[abstract]  # only what the service calls
    server = grpc.aio.server()
    bids_pb2_grpc.add_BidServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(0)


def fast_settings(database_url: str, bids_target: str, **overrides: Any) -> ExecutionSettings:
    """Settings for tests: port 0, no metrics, short leases and polls."""
    values: dict[str, Any] = {
        "grpc_port": 0,
        "metrics_port": 0,
        "database_url": database_url,
        "bids_target": bids_target,
        "workers": 4,
        "lease_seconds": 2.0,
        "heartbeat_seconds": 0.5,
        "poll_seconds": 0.1,
        "watch_poll_seconds": 0.2,
        "cancel_wait_seconds": 5.0,
        "shutdown_grace_seconds": 1.0,
        "llm_backoff_base_seconds": 0.01,
        "llm_backoff_max_seconds": 0.1,
        "pacing_jitter": 0.0,
    }
    values.update(overrides)
    return ExecutionSettings(**values)


ServerFactory = Callable[..., Awaitable[tuple[ExecutionServer, Any]]]


@pytest.fixture
async def start_execution(
    sqlite_url: str, fake_bids: tuple[FakeBidService, str]
) -> AsyncIterator[ServerFactory]:
    """Starts execution servers (on a migrated SQLite file unless ``database_url`` is
    given) wired to the fake BidService; returns (server, stub). ``job_runner``
    replaces the attempt loop. Everything is stopped at the end."""
    await upgrade_async(sqlite_url, MIGRATIONS_DIR)
    started: list[tuple[ExecutionServer, grpc.aio.Channel]] = []

    async def start(
        job_runner: JobRunner | None = None, **overrides: Any
    ) -> tuple[ExecutionServer, Any]:
        settings = fast_settings(
            overrides.pop("database_url", sqlite_url), fake_bids[1], **overrides
        )
        server, port = await create_server(settings, job_runner=job_runner)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        started.append((server, channel))
        return server, execution_pb2_grpc.ExecutionServiceStub(channel)

    yield start
    for server, channel in started:
        await channel.close(None)
        await server.stop(0.5)
