"""1. WithdrawBid through two service instances against the same transaction on raw asyncpg.

Also the CPU each side burns per call (from /proc) and the PostgreSQL sessions
it opens per 1000 calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import grpc.aio
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc

from bidsbench.common import Sizes, progress
from bidsbench.instances import AGENT, AS_AGENT, Instance
from bidsbench.loading import place_pending_bids
from bidsbench.report import Result
from bidsbench.statements import INSERT_EVENT, INSERT_KEY, SELECT_KEY, UPDATE_BID
from bidsbench.statements import SELECT_BID_LOCKED as SELECT_BID

T = TypeVar("T")

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


WITHDRAWN_OF = "SELECT count(*) FROM bids WHERE status = 'WITHDRAWN' AND bid_id = ANY($1)"
EVENTS_OF = "SELECT count(*) FROM bid_events WHERE bid_id = ANY($1)"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a live process so far (Linux /proc); None when gone or unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    after_name = stat.rsplit(")", 1)[1].split()
    return (int(after_name[11]) + int(after_name[12])) / _CLOCK_TICKS


async def drive(
    concurrency: int, items: Sequence[T], op: Callable[[int, T], Awaitable[None]]
) -> float:
    """Run ``op(worker, item)`` for every item, ``concurrency`` in flight; seconds taken."""
    shared = iter(items)

    async def worker(number: int) -> None:
        for item in shared:
            await op(number, item)

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return time.perf_counter() - started


async def raw_withdraw(conn: Any, bid_id: str) -> None:
    """The service's WithdrawBid transaction, statement for statement, on raw asyncpg."""
    event_id, actor = str(uuid.uuid4()), f"agent:{AGENT}"
    request = {"bid_id": bid_id, "event_id": event_id, "reason": "bench"}
    canonical = {"method": "WithdrawBid", "actor": actor, "request": request}
    fingerprint = hashlib.sha256(
        json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    async with conn.transaction():
        await conn.execute("SET LOCAL lock_timeout = 5000")
        bid = await conn.fetchrow(SELECT_BID, bid_id)
        if bid is None or await conn.fetchrow(SELECT_KEY, "event", event_id) is not None:
            raise RuntimeError(f"bid {bid_id} missing or event replayed")
        if bid["status"] != "PENDING":
            raise RuntimeError(f"bid {bid_id} is not PENDING")
        now = datetime.now(UTC)
        event = {
            **request,
            "previous_status": "PENDING",
            "new_status": "WITHDRAWN",
            "actor": actor,
            "created_at": now.isoformat(),
        }
        stored = {"bid": {**dict(bid), "status": "WITHDRAWN", "updated_at": now}, "event": event}
        response = json.dumps({**stored, "task": None}, default=str).encode()
        async with conn.transaction():  # SAVEPOINT, like the service's savepoint()
            await conn.execute(UPDATE_BID, "WITHDRAWN", now, bid_id)
            await conn.execute(
                INSERT_EVENT, event_id, bid_id, "PENDING", "WITHDRAWN", "bench", actor, now
            )
            await conn.execute(INSERT_KEY, "event", event_id, fingerprint, response, now)


@dataclass
class Side:
    """One way of withdrawing: its per-round rates and the CPU it burned, per process group."""

    name: str
    op: Callable[[int, str], Awaitable[None]]
    pids: dict[str, list[int]]  # group -> processes ("postgres" is filled in per round)
    rates: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # group -> CPU seconds, timed rounds
    ops: int = 0
    sessions: int = 0  # PostgreSQL sessions opened during the timed rounds

    def cpu_per_op(self) -> str:
        parts = [f"{group} {secs * 1000 / self.ops:.2f}" for group, secs in self.cpu.items()]
        return f"{self.name}: " + ", ".join(parts)

    def sessions_per_1000(self) -> str:
        return f"{self.name} {self.sessions * 1000 / self.ops:.0f}"


async def backend_pids(conn: Any) -> list[int]:
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    )
    return [row["pid"] for row in rows]


SESSIONS = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"


def cpu_used(pids: Sequence[int], before: dict[int, float | None]) -> float:
    """CPU seconds ``pids`` used since ``before``; processes gone by now are left out."""
    total = 0.0
    for pid in pids:
        now = cpu_seconds(pid)
        if now is not None:
            total += now - (before.get(pid) or 0.0)
    return total


async def timed_round(side: Side, bids: list[str], concurrency: int, probe: Any) -> None:
    groups = {**side.pids, "postgres": await backend_pids(probe)}
    before = {pid: cpu_seconds(pid) for pids in groups.values() for pid in pids}
    sessions = await probe.fetchval(SESSIONS)
    side.rates.append(len(bids) / await drive(concurrency, bids, side.op))
    side.sessions += await probe.fetchval(SESSIONS) - sessions
    groups["postgres"] = sorted(set(groups["postgres"]) | set(await backend_pids(probe)))
    for group, pids in groups.items():
        side.cpu[group] = side.cpu.get(group, 0.0) + cpu_used(pids, before)
    side.ops += len(bids)


async def bench_withdraw(dsn: str, instances: list[Instance], sizes: Sizes) -> Result:
    n, rounds, warmup = sizes.withdraw_ops, sizes.withdraw_rounds, sizes.warmup_ops
    total = 2 * (warmup + n * rounds)
    progress(f"WithdrawBid: placing {total:,} PENDING bids")
    ids = await place_pending_bids(dsn, total, job_prefix="withdraw")
    batches = [ids[i : i + n] for i in range(2 * warmup, total, n)]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{i.port}") for i in instances]
    stubs = [bids_pb2_grpc.BidServiceStub(channel) for channel in channels]
    conns = [await asyncpg.connect(dsn) for _ in range(sizes.concurrency + 1)]

    async def via_service(worker: int, bid_id: str) -> None:
        req = bids_pb2.WithdrawBidRequest(bid_id=bid_id, event_id=str(uuid.uuid4()), reason="bench")
        reply = await stubs[worker % len(stubs)].WithdrawBid(req, timeout=30, metadata=AS_AGENT)
        if reply.bid.status != bids_pb2.BID_STATUS_WITHDRAWN:
            raise RuntimeError(f"WithdrawBid answered {reply.bid.status}")

    async def via_raw(worker: int, bid_id: str) -> None:
        await raw_withdraw(conns[worker + 1], bid_id)

    me = [os.getpid()]
    service = Side("service", via_service, {"instances": [i.pid for i in instances], "client": me})
    raw = Side("raw", via_raw, {"asyncpg process": me})
    try:
        await drive(sizes.concurrency, ids[:warmup], service.op)
        await drive(sizes.concurrency, ids[warmup : 2 * warmup], raw.op)
        for i in range(rounds):  # interleaved, alternating which side goes first
            order = (service, raw) if i % 2 == 0 else (raw, service)
            for side, batch in zip(order, batches[2 * i : 2 * i + 2], strict=True):
                await timed_round(side, batch, sizes.concurrency, conns[0])
            progress(
                f"WithdrawBid round {i + 1}/{rounds}: service {service.rates[-1]:.0f}/s, "
                f"raw {raw.rates[-1]:.0f}/s"
            )
        withdrawn = await conns[0].fetchval(WITHDRAWN_OF, ids)
        events = await conns[0].fetchval(EVENTS_OF, ids)
    finally:
        for channel in channels:
            await channel.close(None)
        for conn in conns:
            await conn.close()
    if not withdrawn == events == total:
        raise RuntimeError(f"{withdrawn} withdrawn bids, {events} events for {total} calls")
    return withdraw_result(sizes, service, raw)


def withdraw_result(sizes: Sizes, service: Side, raw: Side) -> Result:
    service_rate, raw_rate = statistics.median(service.rates), statistics.median(raw.rates)
    ratio = service_rate / raw_rate
    measured = (
        f"service {service_rate:.0f} ops/s vs raw {raw_rate:.0f} ops/s (medians of "
        f"{sizes.withdraw_rounds} x {sizes.withdraw_ops}; rounds: service "
        f"{[round(r) for r in service.rates]}, raw {[round(r) for r in raw.rates]}); "
        f"CPU ms per call: {service.cpu_per_op()}; {raw.cpu_per_op()} (postgres: backends "
        f"alive at the end of a round); new PostgreSQL sessions per 1000 calls: "
        f"{service.sessions_per_1000()}, {raw.sessions_per_1000()}"
    )
    name = f"WithdrawBid, 2 instances vs raw asyncpg, {sizes.concurrency} in flight"
    return Result(name, measured, "service/raw >= 0.5", ratio, ratio >= 0.5, enforced=True)
