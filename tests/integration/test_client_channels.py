"""client.py against a real server: deadlines and request ids flow downstream, retries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from marketplace_common.client import DEADLINE_MARGIN_SECONDS, create_channel
from marketplace_common.server import GrpcServer
from server_kit_fakes import BID_SERVICE, FakeBids, make_server


@pytest.fixture
async def bids() -> AsyncIterator[tuple[GrpcServer, FakeBids]]:
    fake = FakeBids()
    server = make_server(bids=fake)
    port = await server.start()
    fake.downstream_target = f"127.0.0.1:{port}"
    yield server, fake
    await server.stop(0)


async def get_bid(
    server: GrpcServer,
    bid_id: str,
    *,
    rpc_timeout: float | None = None,
    metadata: Sequence[tuple[str, str]] | None = None,
) -> bids_pb2.GetBidResponse:
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        reply: bids_pb2.GetBidResponse = await bids_pb2_grpc.BidServiceStub(channel).GetBid(
            bids_pb2.GetBidRequest(bid_id=bid_id), timeout=rpc_timeout, metadata=metadata
        )
    return reply


async def test_call_timeout_inside_an_rpc_follows_the_callers_deadline(
    bids: tuple[GrpcServer, FakeBids],
) -> None:
    reply = await get_bid(bids[0], "timeout", rpc_timeout=2.0)
    remaining, timeout = (float(part) for part in reply.bid.proposal.split("|"))
    # grpc-timeout rounds the deadline up on the wire, so compare with what the
    # server saw, not with the 2.0 s the client asked for.
    assert 1.0 < remaining <= 2.0 + 0.05
    expected = remaining - DEADLINE_MARGIN_SECONDS
    assert expected - 0.05 <= timeout <= expected


async def test_call_timeout_without_a_callers_deadline_is_the_default(
    bids: tuple[GrpcServer, FakeBids],
) -> None:
    reply = await get_bid(bids[0], "timeout")
    remaining, timeout = reply.bid.proposal.split("|")
    assert remaining == "None"
    assert float(timeout) == 30.0


async def test_downstream_call_inherits_the_remaining_deadline(
    bids: tuple[GrpcServer, FakeBids],
) -> None:
    reply = await get_bid(bids[0], "downstream", rpc_timeout=2.0)
    remaining = float(reply.bid.proposal.split("|")[0])
    # The wire encodes timeouts coarsely (grpc-timeout rounds up), so allow a little slack.
    assert 1.0 < remaining <= 2.0 + 0.05


async def test_downstream_call_without_a_callers_deadline_has_none(
    bids: tuple[GrpcServer, FakeBids],
) -> None:
    reply = await get_bid(bids[0], "downstream")
    assert reply.bid.proposal.split("|")[0] == "None"


async def test_downstream_call_carries_the_request_id(bids: tuple[GrpcServer, FakeBids]) -> None:
    reply = await get_bid(bids[0], "downstream", metadata=(("x-request-id", "req-chain"),))
    assert reply.bid.proposal.split("|")[1] == "req-chain"


async def test_unavailable_is_retried_by_the_channel(bids: tuple[GrpcServer, FakeBids]) -> None:
    server, fake = bids
    reply = await get_bid(server, "flaky-once", rpc_timeout=5.0)
    assert reply.bid.bid_id == "flaky-once"
    assert fake.flaky_calls == 2
    labels = {"grpc_type": "unary", "grpc_service": BID_SERVICE, "grpc_method": "GetBid"}
    assert server.metrics.value("grpc_server_started_total", **labels) == 2
