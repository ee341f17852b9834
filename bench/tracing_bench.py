"""What tracing costs per RPC: off (the default) against the code path before tracing,
and on (every call sampled) against off.

One process, one event loop (uvloop): a kit server (the project's whole interceptor
chain) and clients calling ``BidService/GetBid`` on a servicer that answers at once,
the cheapest handler there is, so the interceptors' share of each call is as large as
it gets (health and reflection are not traced, so they would not measure the server
span). Configurations:

* ``before``: tracing off, and the client's interceptor as it was before tracing
  (metadata and timeout only; the server chain off is the chain of before, unchanged);
* ``off``: tracing off, today's code (the default);
* ``on``: tracing on, parent-based always-on sampling, every span exported to memory
  (a SimpleSpanProcessor: the export runs inside each call, the worst case);
* ``on-unsampled``: tracing on, sampler ``always_off`` (spans made but not recorded).

Rounds alternate the configurations (``before``, ``off``, ``on``, ...), each a fixed
number of calls from ``--concurrency`` tasks; the report gives each one's median
calls/s and per-call time, and the ratio to ``before``. Also the per-call cost of the
log processor that adds trace ids (off and on). On a shared machine run it twice: the
spread between rounds is printed so a difference inside it is read as no difference.

    .venv/bin/python bench/tracing_bench.py [--calls 4000] [--rounds 7] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import timeit
from typing import Any, cast

import grpc.aio
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from marketplace_common import runtime, tracing
from marketplace_common.client import OutgoingCallInterceptor, channel_options, create_channel
from marketplace_common.server import GrpcServer, GrpcService, create_grpc_server
from marketplace_common.settings import ServiceSettings
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased


class BeforeTracingInterceptor(OutgoingCallInterceptor):
    """The client interceptor's unary path as it was before tracing: details, then call."""

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)


def _provider(sampled: bool) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider() if sampled else TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


class InstantBids(bids_pb2_grpc.BidServiceServicer):
    """GetBid answers at once: the call is all interceptors and transport."""

    async def GetBid(self, request: bids_pb2.GetBidRequest, context: Any) -> Any:
        return bids_pb2.GetBidResponse(bid=bids_pb2.Bid(bid_id=request.bid_id))


METHOD = "marketplace.bids.v1.BidService/GetBid"


async def _server() -> GrpcServer:
    add = bids_pb2_grpc.add_BidServiceServicer_to_server
    # The other RPCs keep the generated handlers (UNIMPLEMENTED); the stubs call them abstract.
    servicer = InstantBids()  # type: ignore[abstract]
    service = GrpcService(servicer, add, METHOD.split("/")[0])
    server = create_grpc_server(
        ServiceSettings(grpc_port=0, metrics_port=0), [service], domain="bench.marketplace"
    )
    await server.start()
    return server


def _channel(port: int, before: bool) -> grpc.aio.Channel:
    target = f"127.0.0.1:{port}"
    if not before:
        return create_channel(target)
    # create_channel with the old interceptor in place of today's (same options).
    return grpc.aio.insecure_channel(
        target,
        options=channel_options(),
        interceptors=[cast(Any, BeforeTracingInterceptor())],
    )


async def _round(channel: grpc.aio.Channel, calls: int, concurrency: int) -> float:
    """Seconds for ``calls`` GetBid calls from ``concurrency`` tasks."""
    stub = bids_pb2_grpc.BidServiceStub(channel)
    request = bids_pb2.GetBidRequest(bid_id="bench")
    per_task = calls // concurrency

    async def worker() -> None:
        for _ in range(per_task):
            await stub.GetBid(request, timeout=10)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


class Config:
    def __init__(self, name: str, server: GrpcServer, channel: grpc.aio.Channel, on: Any) -> None:
        self.name = name
        self.server = server
        self.channel = channel
        self.provider = on
        self.seconds: list[float] = []


async def _configs() -> list[Config]:
    configs = []
    for name in ("before", "off", "on", "on-unsampled"):
        provider = None
        if name.startswith("on"):
            provider, _ = _provider(sampled=name == "on")
        tracing.install(provider)  # the server's chain is fixed when it is built
        server = await _server()
        configs.append(Config(name, server, _channel(server.port, name == "before"), provider))
    tracing.install(None)
    return configs


async def _client_interceptor_cost(
    calls: int = 20_000, repeats: int = 25
) -> tuple[float, float, float]:
    """Microseconds per call in the client interceptor alone (the call itself stubbed
    out): before tracing, today's with tracing off, and today's with tracing on. The
    best of ``repeats`` alternating runs, the usual way to read a microbenchmark on a
    busy machine (noise only ever adds time)."""
    details = grpc.aio.ClientCallDetails(
        method=f"/{METHOD}",
        timeout=None,
        metadata=None,
        credentials=None,
        wait_for_ready=None,
    )

    class DoneCall:
        def add_done_callback(self, callback: Any) -> None:
            """Never done: the span of an unfinished call is not ended (not measured)."""

    async def continuation(_details: Any, _request: Any) -> Any:
        return DoneCall()

    async def run(interceptor: OutgoingCallInterceptor) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await interceptor.intercept_unary_unary(continuation, details, None)
        return (time.perf_counter() - started) / calls * 1e6

    before, today = BeforeTracingInterceptor(), OutgoingCallInterceptor()
    provider, _ = _provider(sampled=True)
    best: dict[str, float] = {"before": float("inf"), "off": float("inf"), "on": float("inf")}
    for _ in range(repeats):
        tracing.install(None)
        best["before"] = min(best["before"], await run(before))
        best["off"] = min(best["off"], await run(today))
        tracing.install(provider)
        best["on"] = min(best["on"], await run(today))
        tracing.install(None)
    return best["before"], best["off"], best["on"]


def _log_processor_cost(repeat: int = 200_000) -> tuple[float, float]:
    """Microseconds per log line spent in add_trace_ids, tracing off and inside a span."""
    event: dict[str, Any] = {"event": "rpc.handled"}
    tracing.install(None)
    off = timeit.timeit(lambda: tracing.add_trace_ids(None, "info", event), number=repeat)
    provider, _ = _provider(sampled=True)
    tracing.install(provider)
    tracer = tracing.tracer()
    assert tracer is not None
    with tracer.start_as_current_span("bench"):
        on = timeit.timeit(lambda: tracing.add_trace_ids(None, "info", dict(event)), number=repeat)
    tracing.install(None)
    return off / repeat * 1e6, on / repeat * 1e6


async def amain(args: argparse.Namespace) -> int:
    configs = await _configs()
    try:
        for config in configs:  # warm-up: connections, caches, JIT-free but allocator-warm
            if config.provider is not None:
                tracing.install(config.provider)
            await _round(config.channel, args.calls // 4, args.concurrency)
            tracing.install(None)
        for _ in range(args.rounds):
            for config in configs:
                tracing.install(config.provider)
                config.seconds.append(await _round(config.channel, args.calls, args.concurrency))
                tracing.install(None)
    finally:
        tracing.install(None)
        for config in configs:
            await config.channel.close(None)
            await config.server.stop(0)
    _report(configs, args)
    before, off, on = await _client_interceptor_cost()
    print(
        f"client interceptor alone: {before:.2f} us/call before tracing, {off:.2f} off "
        f"({off - before:+.2f}), {on:.2f} on (span started, context injected)"
    )
    return 0


def _report(configs: list[Config], args: argparse.Namespace) -> None:
    print(
        f"GetBid (answered at once) through the whole interceptor chain, {args.calls} calls x "
        f"{args.rounds} rounds, {args.concurrency} concurrent, client and server in one loop"
    )
    base = statistics.median(configs[0].seconds)
    print(f"{'config':<14}{'calls/s':>10}{'us/call':>10}{'vs before':>11}{'round spread':>14}")
    for config in configs:
        median = statistics.median(config.seconds)
        rates = [args.calls / s for s in config.seconds]
        spread = (max(rates) - min(rates)) / statistics.median(rates)
        print(
            f"{config.name:<14}{args.calls / median:>10.0f}{median / args.calls * 1e6:>10.1f}"
            f"{median / base:>10.3f}x{spread:>13.1%}"
        )
    off_us, on_us = _log_processor_cost()
    print(f"log processor add_trace_ids: {off_us:.3f} us/line off, {on_us:.3f} us/line in a span")
    print("server chain off: the chain of before (no TracingInterceptor is installed)")
    check = min(timeit.repeat(tracing.tracer, number=1_000_000, repeat=7))
    print(f"the check the client's off path adds, tracing.tracer(): {check:.3f} us/call")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=16)
    return runtime.run(amain(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
