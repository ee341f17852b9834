"""Graceful shutdown: health flips first, in-flight calls finish, new calls are refused."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from marketplace_common.client import create_channel
from server_kit_fakes import BID_SERVICE, FakeBids, make_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
APP = Path(__file__).with_name("server_kit_sigterm_app.py")


async def test_in_flight_call_completes_during_graceful_stop() -> None:
    bids = FakeBids(slow_seconds=0.5)
    server = make_server(bids=bids)
    port = await server.start()
    async with create_channel(f"127.0.0.1:{port}") as channel:
        stub = bids_pb2_grpc.BidServiceStub(channel)
        call = asyncio.ensure_future(stub.GetBid(bids_pb2.GetBidRequest(bid_id="slow"), timeout=10))
        await asyncio.wait_for(bids.slow_started.wait(), timeout=5)
        stopping = asyncio.ensure_future(server.stop(5))
        reply = await call
        await stopping
    assert reply.bid.bid_id == "slow"


async def test_new_calls_are_refused_while_draining() -> None:
    bids = FakeBids(slow_seconds=1.0)
    server = make_server(bids=bids)
    port = await server.start()
    async with create_channel(f"127.0.0.1:{port}") as channel:
        stub = bids_pb2_grpc.BidServiceStub(channel)
        slow = asyncio.ensure_future(stub.GetBid(bids_pb2.GetBidRequest(bid_id="slow"), timeout=10))
        await asyncio.wait_for(bids.slow_started.wait(), timeout=5)
        stopping = asyncio.ensure_future(server.stop(5))
        await asyncio.sleep(0.1)
        async with create_channel(f"127.0.0.1:{port}") as fresh:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await bids_pb2_grpc.BidServiceStub(fresh).GetBid(
                    bids_pb2.GetBidRequest(bid_id="b1"), timeout=2
                )
        await slow
        await stopping
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_health_watch_sees_not_serving_before_the_server_stops() -> None:
    server = make_server()
    port = await server.start()
    async with create_channel(f"127.0.0.1:{port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=BID_SERVICE)
        )
        replies = aiter(watch)
        statuses = [(await anext(replies)).status]
        started = time.monotonic()
        stopping = asyncio.ensure_future(server.stop(5))
        statuses += [reply.status async for reply in replies]
        await stopping
    assert statuses == [SERVING, NOT_SERVING]
    # The open Watch stream must not hold the stop for the whole grace period.
    assert time.monotonic() - started < 2


async def test_stop_twice_is_harmless() -> None:
    server = make_server()
    await server.start()
    await server.stop(0)
    await server.stop(0)


async def test_sigterm_drains_and_exits_zero_within_grace() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(APP),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), timeout=20))
        async with create_channel(f"127.0.0.1:{port}") as channel:
            stub = bids_pb2_grpc.BidServiceStub(channel)
            slow = asyncio.ensure_future(
                stub.GetBid(bids_pb2.GetBidRequest(bid_id="slow"), timeout=10)
            )
            await asyncio.sleep(0.3)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            reply = await slow
            code = await asyncio.wait_for(proc.wait(), timeout=10)
        assert reply.bid.bid_id == "slow"
        assert code == 0
        assert time.monotonic() - started < 5
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
