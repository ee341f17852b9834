"""The request path: four RPCs through one service instance against the bare server.

The bare server (bidsbench.bare) runs the service's own statements on the
same schema with nothing else, so ``service / bare`` is the share of this
stack's limit the service reaches on this machine, whatever the machine.
Both are driven by the same grpc.aio client at the same concurrency, in
interleaved rounds (alternating which side goes first); each row reports the
median rate, p50 and p99 latency over the rounds, and each server's
event-loop lag p99 under that load.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc.aio
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from marketplace.common.v1 import common_pb2

from bidsbench.common import Sizes, progress
from bidsbench.instances import AGENT, AS_AGENT, Instance
from bidsbench.loading import place_pending_bids
from bidsbench.report import Result

Call = Callable[["bids_pb2_grpc.BidServiceAsyncStub", Any], Awaitable[None]]
PAGE = 50
TARGET_RATIO, TARGET_P99 = 0.7, 1.5


@dataclass
class Side:
    name: str
    server: Instance
    stub: bids_pb2_grpc.BidServiceAsyncStub
    rates: list[float] = field(default_factory=list)
    p50s: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)

    def summary(self) -> str:
        med = statistics.median
        cpu = f", CPU {med(self.cpu_ms):.2f} ms/call" if self.cpu_ms else ""
        return (
            f"{self.name} {med(self.rates):.0f}/s, p50 {med(self.p50s):.1f} ms, "
            f"p99 {med(self.p99s):.1f} ms, loop lag p99 {med(self.lags):.1f} ms{cpu} "
            f"(rounds {[round(r) for r in self.rates]})"
        )


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process has used so far; None where /proc is not there.

    On a shared machine the rates swing with everyone else's load; the server's own
    CPU time per call does not, so it is reported beside them.
    """
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive_timed(
    concurrency: int, items: Sequence[Any], op: Callable[[Any], Awaitable[None]]
) -> tuple[float, list[float]]:
    """Run ``op(item)`` for every item, ``concurrency`` in flight: (seconds, latencies)."""
    shared: Iterator[Any] = iter(items)
    latencies: list[float] = []

    async def worker() -> None:
        for item in shared:
            started = time.perf_counter()
            await op(item)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


async def get_bid(stub: bids_pb2_grpc.BidServiceAsyncStub, bid_id: str) -> None:
    reply = await stub.GetBid(bids_pb2.GetBidRequest(bid_id=bid_id), timeout=30, metadata=AS_AGENT)
    if reply.bid.bid_id != bid_id:
        raise RuntimeError(f"GetBid answered {reply.bid.bid_id}")


async def list_bids(stub: bids_pb2_grpc.BidServiceAsyncStub, _: object) -> None:
    req = bids_pb2.ListBidsRequest(agent_id=AGENT, page_size=PAGE)
    reply = await stub.ListBids(req, timeout=30, metadata=AS_AGENT)
    if len(reply.bids) != PAGE or not reply.next_page_token:
        raise RuntimeError(f"ListBids answered {len(reply.bids)} bids")


async def place_bid(stub: bids_pb2_grpc.BidServiceAsyncStub, job_id: str) -> None:
    req = bids_pb2.PlaceBidRequest(
        request_id=str(uuid.uuid4()),
        marketplace="bench",
        job_id=job_id,
        agent_id=AGENT,
        amount=common_pb2.Money(currency_code="EUR", units=250, nanos=500_000_000),
        proposal="I will do it well.",
    )
    reply = await stub.PlaceBid(req, timeout=30, metadata=AS_AGENT)
    if reply.bid.status != bids_pb2.BID_STATUS_PENDING:
        raise RuntimeError(f"PlaceBid answered {reply.bid.status}")


async def withdraw_bid(stub: bids_pb2_grpc.BidServiceAsyncStub, bid_id: str) -> None:
    req = bids_pb2.WithdrawBidRequest(bid_id=bid_id, event_id=str(uuid.uuid4()), reason="bench")
    reply = await stub.WithdrawBid(req, timeout=30, metadata=AS_AGENT)
    if reply.bid.status != bids_pb2.BID_STATUS_WITHDRAWN:
        raise RuntimeError(f"WithdrawBid answered {reply.bid.status}")


async def timed_round(side: Side, call: Call, items: Sequence[Any], concurrency: int) -> None:
    await side.server.loop_lag_p99_ms()  # reset the server's lag samples
    cpu_before = cpu_seconds(side.server.pid)
    seconds, latencies = await drive_timed(concurrency, items, partial(call, side.stub))
    cpu_after = cpu_seconds(side.server.pid)
    side.lags.append(await side.server.loop_lag_p99_ms())
    if cpu_before is not None and cpu_after is not None:
        side.cpu_ms.append((cpu_after - cpu_before) * 1000 / len(items))
    side.rates.append(len(items) / seconds)
    cuts = statistics.quantiles(latencies, n=100)
    side.p50s.append(cuts[49] * 1000)
    side.p99s.append(cuts[98] * 1000)


async def compare(
    rpc: str, call: Call, items: Iterator[Any], sides: tuple[Side, Side], sizes: Sizes
) -> Result:
    """Warm both sides up, then ``path_rounds`` interleaved timed rounds of each."""
    n = sizes.path_ops
    for side in sides:
        warmup = [next(items) for _ in range(sizes.warmup_ops)]
        await drive_timed(sizes.concurrency, warmup, partial(call, side.stub))
    for i in range(sizes.path_rounds):
        for side in sides if i % 2 == 0 else sides[::-1]:
            await timed_round(side, call, [next(items) for _ in range(n)], sizes.concurrency)
        progress(
            f"{rpc} round {i + 1}/{sizes.path_rounds}: "
            + ", ".join(f"{s.name} {s.rates[-1]:.0f}/s" for s in sides)
        )
    service, bare = sides
    ratio = statistics.median(service.rates) / statistics.median(bare.rates)
    p99_ratio = statistics.median(service.p99s) / statistics.median(bare.p99s)
    cpu_ratio = (
        f"; CPU per call bare/service {statistics.median(bare.cpu_ms) / cpu:.2f}"
        if service.cpu_ms and bare.cpu_ms and (cpu := statistics.median(service.cpu_ms))
        else ""
    )
    return Result(
        f"{rpc}, 1 instance vs bare grpc.aio+asyncpg server, {sizes.concurrency} in flight",
        f"{service.summary()}; {bare.summary()}; p99 service/bare {p99_ratio:.2f}{cpu_ratio} "
        f"(medians of {sizes.path_rounds} x {n})",
        f"service/bare >= {TARGET_RATIO}, p99 <= {TARGET_P99}x bare",
        ratio,
        ratio >= TARGET_RATIO and p99_ratio <= TARGET_P99,
        enforced=True,
    )


async def bench_request_path(
    dsn: str, service: Instance, bare: Instance, sizes: Sizes
) -> list[Result]:
    per_rpc = 2 * (sizes.warmup_ops + sizes.path_ops * sizes.path_rounds)
    progress(f"request path: placing {per_rpc + 1000:,} PENDING bids (COPY)")
    ids = await place_pending_bids(dsn, per_rpc + 1000, job_prefix="path")
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{s.port}") for s in (service, bare)]
    try:
        stubs: list[bids_pb2_grpc.BidServiceAsyncStub] = [
            bids_pb2_grpc.BidServiceStub(channel) for channel in channels
        ]

        def sides() -> tuple[Side, Side]:
            return Side("service", service, stubs[0]), Side("bare", bare, stubs[1])

        readable = ids[per_rpc:]
        return [
            await compare("GetBid", get_bid, _cycle(readable), sides(), sizes),
            await compare("ListBids", list_bids, _cycle([None]), sides(), sizes),
            await compare("PlaceBid", place_bid, _fresh_jobs(), sides(), sizes),
            await compare("WithdrawBid", withdraw_bid, iter(ids[:per_rpc]), sides(), sizes),
        ]
    finally:
        for channel in channels:
            await channel.close(None)


def _fresh_jobs() -> Iterator[str]:
    while True:
        yield f"p-{uuid.uuid4()}"


def _cycle(items: Sequence[Any]) -> Iterator[Any]:
    while True:
        yield from items
