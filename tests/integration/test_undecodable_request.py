"""A request body that is not a valid protobuf message is the caller's fault: INVALID_ARGUMENT.

Without the kit's lenient decoding, grpc.aio answers UNKNOWN ("Unexpected
<class 'DecodeError'>: ...") with no status details, before any interceptor runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]  # no py.typed
from marketplace.bids.v1 import bids_pb2
from rpc_trailers import status_details
from server_kit_fakes import DOMAIN, make_server

GET_BID = "/marketplace.bids.v1.BidService/GetBid"
WATCH = "/marketplace.execution.v1.ExecutionService/WatchExecution"
CORRUPT = b"\xff\xff\xff\xff"  # a field tag whose varint never ends
BAD_UTF8 = b"\x0a\x02\xc3\x28"  # field 1 (a string) holding invalid UTF-8


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = make_server()
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    await server.stop(0)


def _assert_invalid_request(exc: grpc.aio.AioRpcError) -> None:
    assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT, exc.details()
    raw = status_details(exc)
    assert raw is not None
    status = status_pb2.Status.FromString(raw)
    infos, fields = [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    assert [i.domain for i in infos] == [DOMAIN]
    assert fields == ["request"]


@pytest.mark.parametrize("body", [CORRUPT, BAD_UTF8], ids=["corrupt", "bad-utf8"])
async def test_undecodable_unary_request_is_invalid_argument(
    channel: grpc.aio.Channel, body: bytes
) -> None:
    call = channel.unary_unary(GET_BID, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(body, timeout=5)
    _assert_invalid_request(caught.value)


async def test_undecodable_streaming_request_is_invalid_argument(
    channel: grpc.aio.Channel,
) -> None:
    call = channel.unary_stream(WATCH, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call(CORRUPT, timeout=5):
            pass
    _assert_invalid_request(caught.value)


async def test_valid_raw_body_still_reaches_the_servicer(channel: grpc.aio.Channel) -> None:
    call = channel.unary_unary(GET_BID, request_serializer=None, response_deserializer=None)
    reply = await call(bids_pb2.GetBidRequest(bid_id="b1").SerializeToString(), timeout=5)
    assert bids_pb2.GetBidResponse.FromString(reply).bid.bid_id == "b1"
