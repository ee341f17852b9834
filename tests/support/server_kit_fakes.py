"""Tiny fake servicers and a server factory for the server-kit tests (no domain logic)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc.aio
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from marketplace.execution.v1 import execution_pb2, execution_pb2_grpc
from marketplace_common.auth import Role, TokenAuthenticator, current_principal, require_role
from marketplace_common.client import call_timeout, create_channel
from marketplace_common.errors import NotFoundError, UnavailableError
from marketplace_common.rpc_context import current_call
from marketplace_common.server import GrpcServer, GrpcService, create_grpc_server
from marketplace_common.settings import ServiceSettings

BID_SERVICE = bids_pb2.DESCRIPTOR.services_by_name["BidService"].full_name
EXECUTION_SERVICE = execution_pb2.DESCRIPTOR.services_by_name["ExecutionService"].full_name
DOMAIN = "bids.marketplace"

Context = grpc.aio.ServicerContext[Any, Any]

# The fakes implement only the RPCs the server-kit tests call; the others keep
# the generated base class's handlers, which answer UNIMPLEMENTED. The generated
# stubs declare every RPC abstract, so the fakes restate those handlers by name
# (this also tells mypy the classes are complete).
_BidsBase = bids_pb2_grpc.BidServiceServicer
_ExecutionsBase = execution_pb2_grpc.ExecutionServiceServicer


@dataclass
class FakeBids(_BidsBase):
    """GetBid's bid_id picks a behaviour; GetTask reports what the server saw."""

    CreateTask = _BidsBase.CreateTask
    ListTasks = _BidsBase.ListTasks
    PlaceBid = _BidsBase.PlaceBid
    ListBids = _BidsBase.ListBids
    WithdrawBid = _BidsBase.WithdrawBid
    AcceptBid = _BidsBase.AcceptBid
    RejectBid = _BidsBase.RejectBid
    ListBidEvents = _BidsBase.ListBidEvents
    StartTask = _BidsBase.StartTask
    CompleteTask = _BidsBase.CompleteTask
    FailTask = _BidsBase.FailTask
    CreateDeliveryToken = _BidsBase.CreateDeliveryToken
    GetDelivery = _BidsBase.GetDelivery
    ListTaskEvents = _BidsBase.ListTaskEvents
    RevokeDeliveryToken = _BidsBase.RevokeDeliveryToken

    slow_seconds: float = 0.5
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    downstream_target: str = ""
    flaky_calls: int = 0

    async def GetBid(self, request: bids_pb2.GetBidRequest, context: Context) -> Any:
        match request.bid_id:
            case "missing":
                raise NotFoundError("bid missing not found", reason="BID_NOT_FOUND")
            case "flaky":
                raise UnavailableError("database unavailable", retry_after=1.5)
            case "flaky-once":
                self.flaky_calls += 1
                if self.flaky_calls == 1:
                    raise UnavailableError("database restarting")
            case "boom":
                raise RuntimeError("secret internals: SELECT * FROM bids")
            case "slow":
                self.slow_started.set()
                await asyncio.sleep(self.slow_seconds)
            case "service-only":
                require_role(Role.SERVICE)
            case "timeout":
                # The deadline as this RPC sees it first, then the downstream timeout.
                call = current_call()
                remaining = None if call is None else call.time_remaining()
                return _bid(request.bid_id, proposal=f"{remaining!r}|{call_timeout(30.0)!r}")
            case "downstream":
                return await self._downstream(request.bid_id)
        return _bid(request.bid_id, proposal=current_principal().subject)

    async def GetTask(self, request: bids_pb2.GetTaskRequest, context: Context) -> Any:
        call = current_call()
        return bids_pb2.GetTaskResponse(
            task=bids_pb2.Task(
                task_id=request.task_id,
                title=repr(context.time_remaining()),
                description=call.request_id if call else "",
            )
        )

    async def _downstream(self, bid_id: str) -> Any:
        async with create_channel(self.downstream_target) as channel:
            stub = bids_pb2_grpc.BidServiceStub(channel)
            reply = await stub.GetTask(bids_pb2.GetTaskRequest(task_id="t1"))
        return _bid(bid_id, proposal=f"{reply.task.title}|{reply.task.description}")


def _bid(bid_id: str, *, proposal: str) -> bids_pb2.GetBidResponse:
    return bids_pb2.GetBidResponse(bid=bids_pb2.Bid(bid_id=bid_id, proposal=proposal))


class FakeExecutions(_ExecutionsBase):
    """WatchExecution streams two events, or fails after the first for id "fail"."""

    SubmitExecution = _ExecutionsBase.SubmitExecution
    GetExecution = _ExecutionsBase.GetExecution
    ListExecutions = _ExecutionsBase.ListExecutions
    CancelExecution = _ExecutionsBase.CancelExecution
    Complete = _ExecutionsBase.Complete

    async def WatchExecution(
        self, request: execution_pb2.WatchExecutionRequest, context: Context
    ) -> AsyncIterator[execution_pb2.WatchExecutionResponse]:
        for n in range(2):
            if n == 1 and request.execution_id == "fail":
                raise NotFoundError("execution vanished", reason="EXECUTION_NOT_FOUND")
            event = execution_pb2.ExecutionEvent(
                execution=execution_pb2.Execution(execution_id=f"{request.execution_id}-{n}")
            )
            yield execution_pb2.WatchExecutionResponse(event=event)


def make_server(
    *,
    auth_tokens: Sequence[str] = (),
    bids: FakeBids | None = None,
    **settings: Any,
) -> GrpcServer:
    """A server with the fake services on 127.0.0.1, port 0 unless given."""
    config = ServiceSettings(grpc_port=0, auth_tokens=list(auth_tokens), **settings)
    services = [
        GrpcService(
            bids or FakeBids(), bids_pb2_grpc.add_BidServiceServicer_to_server, BID_SERVICE
        ),
        GrpcService(
            FakeExecutions(),
            execution_pb2_grpc.add_ExecutionServiceServicer_to_server,
            EXECUTION_SERVICE,
        ),
    ]
    return create_grpc_server(
        config,
        services,
        domain=DOMAIN,
        authenticator=TokenAuthenticator(config.auth_tokens),
    )
