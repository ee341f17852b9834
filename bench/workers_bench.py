"""``bids-service serve --workers 2`` against ``--workers 1``: GetBid and PlaceBid on PostgreSQL.

Run: ``.venv/bin/python bench/workers_bench.py [--quick] [--pg-url URL]`` (or
``make bench-workers``). ``--pg-url`` / ``MARKETPLACE_BENCH_PG_URL`` is an
admin URL (default ``postgresql://postgres@127.0.0.1:5432/postgres``); the run
creates a throwaway database, migrates it, and drops it at the end.

Two bids services run as the real console script on that one database, one
``serve --workers 2`` and one ``serve --workers 1``: auth on, INFO logs (JSON,
to temporary files), ``BIDS_DB_POOL_SIZE`` 8 per process (PostgreSQL's
connections are shared), metrics off. The same client drives both: grpc.aio in
this process, 32 calls in flight spread over 8 channels, each with a
connection of its own (a local subchannel pool). A gRPC connection goes to one
process, so a single channel would measure one process whatever ``--workers``
says. Interleaved rounds, alternating which side goes first; each row reports
the median rate of each side and the ratio 2 workers / 1 worker, the servers'
CPU per call (the supervisor and its processes, from /proc), and how the
2-worker side's calls split over its processes (from their ``rpc.handled``
lines). GetBid reads bids loaded with COPY; PlaceBid places a bid on a fresh
job each call.

What it can show is bounded by the machine: the client, PostgreSQL and the
servers share its cores, and the client alone (one Python process) needs most
of a core at these rates. The ratio says what a second process buys on *this*
host; with the client elsewhere and more cores it is larger. The load average
is printed before and after, so a row measured on a busy machine says so.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc.aio
from bidsbench.instances import AGENT, AGENT_TOKEN, AS_AGENT
from bidsbench.loading import place_pending_bids
from grpc_health.v1 import health_pb2, health_pb2_grpc
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from marketplace.common.v1 import common_pb2
from marketplace_bids.migrations import SCRIPT_LOCATION
from marketplace_common import runtime
from marketplace_common.auth import hash_token
from marketplace_common.migrations import upgrade_async
from marketplace_common.pg_admin import asyncpg_dsn, throwaway_database

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL_ENV = "MARKETPLACE_BENCH_PG_URL"
BIN = Path(sys.executable).parent
POOL_SIZE = 8
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Sizes:
    label: str
    concurrency: int = 32
    channels: int = 8
    warmup_ops: int = 500  # per side and RPC
    ops: int = 2000  # per timed round and side
    rounds: int = 5  # interleaved rounds per RPC


FULL = Sizes("full")
QUICK = Sizes("quick", warmup_ops=200, ops=500, rounds=3)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` so far; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listing:
            return [int(child) for child in listing.read().split()]
    except OSError:
        return []


@dataclass
class Service:
    """One ``bids-service serve --workers N`` and what was measured of it."""

    workers: int
    port: int
    proc: asyncio.subprocess.Process
    log: IO[str]
    rates: dict[str, list[float]] = field(default_factory=dict)
    cpu_ms: dict[str, list[float]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.workers} worker{'s' if self.workers > 1 else ''}"

    def cpu_seconds(self) -> float:
        """The supervisor's CPU time and its processes' (one process: itself)."""
        pids = [self.proc.pid, *_children(self.proc.pid)]
        return sum(_cpu_seconds(pid) for pid in pids)

    def log_lines(self) -> list[dict[str, Any]]:
        self.log.seek(0)
        found = []
        for raw in self.log.read().splitlines():
            try:
                found.append(json.loads(raw))
            except ValueError:
                continue
        return found

    def handled_by_pid(self, method: str) -> Counter[int]:
        return Counter(
            int(line.get("pid", self.proc.pid))
            for line in self.log_lines()
            if line.get("event") == "rpc.handled" and str(line.get("method")).endswith(method)
        )


async def _wait_until_serving(service: Service) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if service.proc.returncode is not None:
                break
            serving = [line for line in service.log_lines() if line.get("event") == "bids.serving"]
            if len(serving) >= service.workers:
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                except grpc.aio.AioRpcError:
                    reply = None
                if reply is not None and reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.2)
    service.log.seek(0)
    raise RuntimeError(f"bids-service --workers {service.workers} did not start:\n"
                       f"{service.log.read()[-3000:]}")  # fmt: skip


@asynccontextmanager
async def bids_service(url: str, workers: int) -> AsyncIterator[Service]:
    """``bids-service serve --workers N`` on ``url``; SIGTERM (then kill) on the way out."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("BIDS_")}
    port = _free_port()
    env |= {
        "BIDS_DATABASE_URL": url,
        "BIDS_GRPC_PORT": str(port),
        "BIDS_METRICS_PORT": "0",
        "BIDS_DB_POOL_SIZE": str(POOL_SIZE),
        "BIDS_AUTH_TOKENS": f"{hash_token(AGENT_TOKEN)}=agent:{AGENT}",
        "BIDS_LOG_JSON": "true",
        "BIDS_SHUTDOWN_GRACE_SECONDS": "2",
        "BIDS_RETENTION_INTERVAL_SECONDS": "0",
    }
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed below)
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "bids-service"),
        "serve",
        "--workers",
        str(workers),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
    )
    service = Service(workers, port, proc, log)
    try:
        await _wait_until_serving(service)
        yield service
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout=20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.close()


Call = Callable[["bids_pb2_grpc.BidServiceAsyncStub", Any], Awaitable[None]]


async def get_bid(stub: bids_pb2_grpc.BidServiceAsyncStub, bid_id: str) -> None:
    reply = await stub.GetBid(bids_pb2.GetBidRequest(bid_id=bid_id), timeout=30, metadata=AS_AGENT)
    if reply.bid.bid_id != bid_id:
        raise RuntimeError(f"GetBid answered {reply.bid.bid_id}")


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


class Client:
    """``channels`` connections to one service; each call takes the next one."""

    def __init__(self, port: int, channels: int) -> None:
        options = [("grpc.use_local_subchannel_pool", 1)]
        self.channels = [
            grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(channels)
        ]
        stubs = [bids_pb2_grpc.BidServiceStub(channel) for channel in self.channels]
        self._next = itertools.cycle(stubs)

    def stub(self) -> bids_pb2_grpc.BidServiceAsyncStub:
        return next(self._next)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close(None)


async def drive(client: Client, call: Call, items: Sequence[Any], concurrency: int) -> float:
    """Run ``call`` on every item, ``concurrency`` in flight; the seconds it took."""
    shared: Iterator[Any] = iter(items)

    async def worker() -> None:
        for item in shared:
            await call(client.stub(), item)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


@dataclass(frozen=True)
class Row:
    rpc: str
    ratio: float
    measured: str


async def compare(
    rpc: str,
    call: Call,
    items: Iterator[Any],
    sides: Sequence[tuple[Service, Client]],
    sizes: Sizes,
) -> Row:
    for _, client in sides:
        await drive(client, call, [next(items) for _ in range(sizes.warmup_ops)], sizes.concurrency)
    for i in range(sizes.rounds):
        for service, client in sides if i % 2 == 0 else sides[::-1]:
            batch = [next(items) for _ in range(sizes.ops)]
            cpu_before = service.cpu_seconds()
            seconds = await drive(client, call, batch, sizes.concurrency)
            cpu = service.cpu_seconds() - cpu_before
            service.rates.setdefault(rpc, []).append(len(batch) / seconds)
            service.cpu_ms.setdefault(rpc, []).append(cpu * 1000 / len(batch))
        progress(
            f"{rpc} round {i + 1}/{sizes.rounds}: "
            + ", ".join(f"{s.name} {s.rates[rpc][-1]:.0f}/s" for s, _ in sides)
        )
    two, one = (service for service, _ in sides)
    med = statistics.median
    ratio = med(two.rates[rpc]) / med(one.rates[rpc])
    split = sorted(two.handled_by_pid(rpc).values(), reverse=True)
    total = sum(split) or 1
    shares = "/".join(f"{100 * n / total:.0f}%" for n in split)
    parts = [
        f"{s.name} {med(s.rates[rpc]):.0f}/s (rounds {[round(r) for r in s.rates[rpc]]}), "
        f"server CPU {med(s.cpu_ms[rpc]):.2f} ms/call"
        for s in (two, one)
    ]
    measured = (
        f"{'; '.join(parts)}; the 2 workers' calls split {shares} over their processes "
        f"(medians of {sizes.rounds} x {sizes.ops}, {sizes.concurrency} in flight "
        f"over {sizes.channels} connections)"
    )
    return Row(rpc, ratio, measured)


def _fresh_jobs() -> Iterator[str]:
    prefix = uuid.uuid4().hex[:8]
    for i in itertools.count():
        yield f"workers-{prefix}-{i}"


async def run(url: str, sizes: Sizes) -> list[Row]:
    """Both rows on the (empty) database at ``url``, which is migrated first."""
    progress("migrating the bench database")
    await upgrade_async(url, SCRIPT_LOCATION)
    readable = await place_pending_bids(asyncpg_dsn(url), 1000, job_prefix="workers")
    async with bids_service(url, 2) as two, bids_service(url, 1) as one:
        clients = [Client(two.port, sizes.channels), Client(one.port, sizes.channels)]
        sides = list(zip((two, one), clients, strict=True))
        try:
            return [
                await compare("GetBid", get_bid, itertools.cycle(readable), sides, sizes),
                await compare("PlaceBid", place_bid, _fresh_jobs(), sides, sizes),
            ]
        finally:
            for client in clients:
                await client.close()


def format_rows(rows: Sequence[Row], sizes: Sizes, load: tuple[str, str], elapsed: float) -> str:
    lines = [f"bids-service serve --workers 2 / --workers 1 on PostgreSQL, {sizes.label} sizes", ""]
    lines += [f"{row.rpc}: 2 workers / 1 worker = {row.ratio:.2f}" for row in rows]
    lines += ["", "measured:"] + [f"- {row.rpc}: {row.measured}" for row in rows]
    lines += [
        "",
        f"machine: {os.cpu_count()} CPUs; load average before {load[0]}, after {load[1]}; "
        f"client, PostgreSQL and servers on the same host; BIDS_DB_POOL_SIZE {POOL_SIZE} "
        "per process, auth on, INFO logs",
        f"total run time: {elapsed:.1f} s",
    ]
    return "\n".join(lines)


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


async def amain(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    sizes = QUICK if args.quick else FULL
    before = _load()
    async with throwaway_database(args.pg_url, prefix="marketplace_bench") as url:
        rows = await run(url, sizes)
    print(format_rows(rows, sizes, (before, _load()), time.perf_counter() - started))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(PG_URL_ENV, DEFAULT_PG_URL),
        help=f"admin URL; the run creates and drops its own database there (env {PG_URL_ENV})",
    )
    return runtime.run(amain(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
