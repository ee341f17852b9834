"""Helpers for the bids service's integration tests: principals, callers, request builders."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]  # no py.typed
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from marketplace.common.v1 import common_pb2
from marketplace_bids.migrations import SCRIPT_LOCATION
from marketplace_bids.server import BidsServer, create_server
from marketplace_bids.settings import BidsSettings
from marketplace_common.auth import hash_token
from marketplace_common.migrations import upgrade_async
from rpc_trailers import status_details

ALICE = "alice@example.com"
BOB = "bob@example.com"
AGENT = "agent-1"
OTHER_AGENT = "agent-2"

# name -> (raw token, role, subject)
PRINCIPALS: dict[str, tuple[str, str, str]] = {
    "alice": ("tok-alice-" + "a" * 40, "client", ALICE),
    "bob": ("tok-bob-" + "b" * 40, "client", BOB),
    "agent": ("tok-agent-" + "c" * 40, "agent", AGENT),
    "other_agent": ("tok-agent2-" + "d" * 40, "agent", OTHER_AGENT),
    "service": ("tok-service-" + "e" * 40, "service", "execution"),
    "admin": ("tok-admin-" + "f" * 40, "admin", "ops"),
}


def token_entries() -> list[str]:
    return [f"{hash_token(raw)}={role}:{subject}" for raw, role, subject in PRINCIPALS.values()]


def settings_for(url: str, **overrides: Any) -> BidsSettings:
    values: dict[str, Any] = {
        "grpc_port": 0,
        "metrics_port": 0,
        "database_url": url,
        "auth_tokens": token_entries(),
        "shutdown_grace_seconds": 1.0,
        **overrides,
    }
    return BidsSettings(**values)


async def migrate(url: str) -> None:
    await upgrade_async(url, SCRIPT_LOCATION)


async def start(url: str, **overrides: Any) -> BidsServer:
    server, _port = await create_server(settings_for(url, **overrides))
    return server


class Caller:
    """A BidService stub that sends one principal's bearer token on every call."""

    def __init__(self, channel: grpc.aio.Channel, name: str) -> None:
        self._stub = bids_pb2_grpc.BidServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {PRINCIPALS[name][0]}"),)

    def __getattr__(self, rpc: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._stub, rpc)

        async def invoke(request: Any, deadline: float = 30.0) -> Any:
            return await method(request, metadata=self._metadata, timeout=deadline)

        return invoke


@dataclass
class Details:
    """The decoded google.rpc.Status of a failed call."""

    code: grpc.StatusCode
    message: str
    info: error_details_pb2.ErrorInfo
    info_count: int
    retry: error_details_pb2.RetryInfo | None
    bad_request: error_details_pb2.BadRequest | None

    @property
    def fields(self) -> list[str]:
        if self.bad_request is None:
            return []
        return [v.field for v in self.bad_request.field_violations]


def details(exc: grpc.aio.AioRpcError) -> Details:
    raw = status_details(exc)
    assert raw is not None, f"no status details on {exc.code()}: {exc.details()}"
    status = status_pb2.Status.FromString(raw)
    infos, retry, bad = [], None, None
    for any_ in status.details:
        if any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_.Unpack(info)
            infos.append(info)
        elif any_.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            any_.Unpack(retry)
        elif any_.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            any_.Unpack(bad)
    assert infos, "no ErrorInfo"
    return Details(exc.code(), exc.details() or "", infos[0], len(infos), retry, bad)


async def expect_error(call: Awaitable[Any]) -> Details:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return details(exc)
    raise AssertionError("the call succeeded")


def new_id() -> str:
    return str(uuid.uuid4())


def money(units: int = 100, nanos: int = 0, currency: str = "EUR") -> common_pb2.Money:
    return common_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def create_task_request(client: str = ALICE, **kw: Any) -> bids_pb2.CreateTaskRequest:
    values: dict[str, Any] = {
        "request_id": new_id(),
        "client_email": client,
        "title": "Write a haiku",
        "description": "About databases.",
        "budget": money(),
        **kw,
    }
    return bids_pb2.CreateTaskRequest(**values)


def place_bid_request(
    agent: str = AGENT, job_id: str = "job-1", **kw: Any
) -> bids_pb2.PlaceBidRequest:
    values: dict[str, Any] = {
        "request_id": new_id(),
        "marketplace": "upwork",
        "job_id": job_id,
        "agent_id": agent,
        "amount": money(250, 500_000_000),
        "proposal": "I will do it well.",
        **kw,
    }
    return bids_pb2.PlaceBidRequest(**values)


def accept_request(bid_id: str, client: str = ALICE, **kw: Any) -> bids_pb2.AcceptBidRequest:
    values: dict[str, Any] = {
        "bid_id": bid_id,
        "event_id": new_id(),
        "client_email": client,
        "title": "Do the job",
        "description": "As proposed.",
        **kw,
    }
    return bids_pb2.AcceptBidRequest(**values)


async def scalar(url: str, sql: str, **params: Any) -> Any:
    """One value from the database behind a server (for asserting invariants)."""
    from marketplace_common.db import create_engine
    from sqlalchemy import text

    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar_one()
    finally:
        await engine.dispose()


async def completed_task(h: Any, client: str = "alice") -> tuple[bids_pb2.Task, str]:
    """A task created by ``client``, started and completed by the service; and its execution id."""
    email = PRINCIPALS[client][2]
    task = (await h.as_(client).CreateTask(create_task_request(email))).task
    execution_id = new_id()
    service = h.as_("service")
    await service.StartTask(start_request(task.task_id, execution_id))
    done = await service.CompleteTask(complete_request(task.task_id, execution_id, result="ok"))
    return done.task, execution_id


def start_request(task_id: str, execution_id: str | None = None) -> bids_pb2.StartTaskRequest:
    return bids_pb2.StartTaskRequest(
        task_id=task_id, execution_id=execution_id or new_id(), event_id=new_id()
    )


def complete_request(
    task_id: str, execution_id: str | None = None, result: str = "ok"
) -> bids_pb2.CompleteTaskRequest:
    return bids_pb2.CompleteTaskRequest(
        task_id=task_id, execution_id=execution_id or new_id(), event_id=new_id(), result=result
    )


async def execute(url: str, sql: str, **params: Any) -> None:
    """Run one statement and commit (to set up a state the API cannot reach)."""
    from marketplace_common.db import create_engine
    from sqlalchemy import text

    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(sql), params)
    finally:
        await engine.dispose()


@dataclass
class Harness:
    """One running bids server and a channel to it."""

    server: BidsServer
    channel: grpc.aio.Channel
    url: str

    def as_(self, name: str) -> Caller:
        return Caller(self.channel, name)


async def open_harness(url: str, **overrides: Any) -> Harness:
    server = await start(url, **overrides)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return Harness(server, channel, url)


async def close_harness(harness: Harness) -> None:
    await harness.channel.close(None)
    await harness.server.stop(0.5)
