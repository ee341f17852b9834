"""Both real services with tokens configured on each, and callers for every principal.

The bids service knows the people and the execution service's own token
(``service:execution``); the execution service knows the same people plus a
platform service (``service:platform``) and calls bids with its service token.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc.aio
from bids_support import PRINCIPALS, Caller, accept_request, place_bid_request
from bids_support import migrate as migrate_bids
from bids_support import settings_for as bids_settings_for
from marketplace.execution.v1 import execution_pb2 as pb
from marketplace.execution.v1 import execution_pb2_grpc
from marketplace_bids.server import create_server as create_bids_server
from marketplace_common.auth import hash_token
from marketplace_common.migrations import upgrade_async
from marketplace_execution.migrations import MIGRATIONS_DIR
from marketplace_execution.server import create_server as create_execution_server
from marketplace_execution.settings import ExecutionSettings

# name -> (raw token, role, subject) on the execution service: the people of the
# bids service, and a platform service instead of bids' ``service:execution``.
EXECUTION_PRINCIPALS: dict[str, tuple[str, str, str]] = {
    **{name: who for name, who in PRINCIPALS.items() if name != "service"},
    "service": ("tok-platform-" + "9" * 40, "service", "platform"),
}
CALLERS = ("none", "alice", "agent", "bob", "other_agent", "service", "admin")
"""Every kind of caller: anonymous, owner client, owner agent, another client, another
agent, a service that did not submit, admin (tasks are alice's, won by ``agent``)."""


def execution_token_entries() -> list[str]:
    return [
        f"{hash_token(raw)}={role}:{subject}"
        for raw, role, subject in EXECUTION_PRINCIPALS.values()
    ]


class ExecutionCaller:
    """An ExecutionService stub sending one principal's token ("none": no token at all)."""

    def __init__(self, channel: grpc.aio.Channel, name: str) -> None:
        self.stub = execution_pb2_grpc.ExecutionServiceStub(channel)
        self.name = name
        self.metadata: tuple[tuple[str, str], ...] = (
            ()
            if name == "none"
            else (("authorization", f"Bearer {EXECUTION_PRINCIPALS[name][0]}"),)
        )

    def __getattr__(self, rpc: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.stub, rpc)

        async def invoke(request: Any, deadline: float = 30.0) -> Any:
            return await method(request, metadata=self.metadata, timeout=deadline)

        return invoke

    async def first_watch_event(self, execution_id: str) -> pb.WatchExecutionResponse:
        """The first event of a watch (the current state); the stream is then closed."""
        call = self.stub.WatchExecution(
            pb.WatchExecutionRequest(execution_id=execution_id),
            metadata=self.metadata,
            timeout=30,
        )
        try:
            async for event in call:
                return event
        finally:
            call.cancel()
        raise AssertionError("the watch ended without an event")


@dataclass
class World:
    """The two services and a caller per principal."""

    bids_url: str
    execution_url: str
    bids_channel: grpc.aio.Channel
    execution_channels: list[grpc.aio.Channel]
    """One per execution replica (all on the same database)."""

    def bids(self, name: str) -> Caller:
        return Caller(self.bids_channel, name)

    def execution(self, name: str, replica: int = 0) -> ExecutionCaller:
        return ExecutionCaller(self.execution_channels[replica], name)

    async def won_task(self, agent: str = "agent", client: str = "alice") -> str:
        """A PENDING task ordered by ``client`` from ``agent``'s accepted bid."""
        bid = await self.bids(agent).PlaceBid(
            place_bid_request(PRINCIPALS[agent][2], job_id=f"job-{uuid.uuid4()}")
        )
        accepted = await self.bids(client).AcceptBid(
            accept_request(bid.bid.bid_id, PRINCIPALS[client][2])
        )
        return str(accepted.task.task_id)

    async def submit(self, name: str, task_id: str, **fields: Any) -> pb.Execution:
        request = pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=task_id, **fields)
        response: pb.SubmitExecutionResponse = await self.execution(name).SubmitExecution(request)
        return response.execution


@asynccontextmanager
async def running_world(
    bids_url: str, execution_url: str, *, replicas: int = 1, **execution_overrides: Any
) -> AsyncIterator[World]:
    """Both services on free ports, tokens on both; by default no worker runs, so
    executions stay QUEUED and every cell of a matrix sees the same state.
    ``replicas`` execution servers share the execution database."""
    await migrate_bids(bids_url)
    await upgrade_async(execution_url, MIGRATIONS_DIR)
    bids_server, bids_port = await create_bids_server(bids_settings_for(bids_url))
    values: dict[str, Any] = {
        "grpc_port": 0,
        "metrics_port": 0,
        "database_url": execution_url,
        "bids_target": f"127.0.0.1:{bids_port}",
        "bids_token": PRINCIPALS["service"][0],
        "auth_tokens": execution_token_entries(),
        "workers": 0,
        "cancel_wait_seconds": 0.0,
        "watch_poll_seconds": 0.2,
        "shutdown_grace_seconds": 1.0,
        **execution_overrides,
    }
    servers = []
    channels: list[grpc.aio.Channel] = []
    try:
        for _ in range(replicas):
            server, port = await create_execution_server(ExecutionSettings(**values))
            servers.append(server)
            channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{bids_port}") as bids_channel:
            yield World(bids_url, execution_url, bids_channel, channels)
    finally:
        for channel in channels:
            await channel.close(None)
        for server in servers:
            await server.stop(0.5)
        await bids_server.stop(0.5)
