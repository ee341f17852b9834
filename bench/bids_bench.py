"""Bids service benchmark on PostgreSQL: three side-by-side ratios in one run.

Run: ``.venv/bin/python bench/bids_bench.py [--quick] [--pg-url URL]`` (or
``make bench-bids``). ``--pg-url`` / ``MARKETPLACE_BENCH_PG_URL`` is an admin
URL (default ``postgresql://postgres@127.0.0.1:5432/postgres``); the run
creates a throwaway database ``marketplace_bench_<random>`` there, migrates it
with the service's own Alembic migrations, and drops it at the end. Prints a
table; exits 1 when an enforced target is missed. Only ratios measured side by
side in one run count (the machine is small and noisy), so every row compares
two things timed interleaved, and reports medians.

1. WithdrawBid throughput through the service, two instances on one database,
   against the same transaction done with raw asyncpg at the same concurrency
   (target: service/raw >= 0.5). The raw side replays the service's real SQL
   (captured from its engine): BEGIN; SET LOCAL lock_timeout; SELECT the bid
   FOR NO KEY UPDATE; SELECT the idempotency record of the event_id; SAVEPOINT;
   UPDATE the bid; INSERT the bid event; INSERT the idempotency record
   (fingerprint + stored response); RELEASE; COMMIT. What the service adds on
   top (gRPC, auth, validation, pydantic, SQLAlchemy, the pool's pre-ping,
   logging at the service's default level) is exactly what is measured. The
   CPU each side burns per call (from /proc: the instances, this process, the
   PostgreSQL backends) and the PostgreSQL sessions opened per 1000 calls are
   reported too, to show where the time goes. The instances run with the
   service's default settings (``--service-log-level``/``--service-pool-size``
   change that), auth on, and stop with this process (SIGTERM or stdin EOF).

   The instances run as **subprocesses**, not in this process: each gets its
   own interpreter and GIL, as two replicas would in production. In-process,
   the client driving 32 calls and both servers would share one GIL and one
   event loop, so on 2 cores we would measure Python contending with itself
   rather than the service; as processes the OS spreads client, servers and
   PostgreSQL over both cores, which is the honest setting (the raw side
   likewise gets a process of its own). The client is a plain grpc.aio
   channel, the leanest there is, since it shares the cores with the service.
2. ListTasks filtered by client_email on N (1,000,000) tasks loaded with COPY:
   the SQL the repository emits (``task_list_statement``, first page, limit
   page_size + 1) with the index against a forced sequential scan (enable_*scan
   off in a transaction); target index >= 100x faster, and EXPLAIN must show
   the indexed run on ``ix_tasks_client_email_created_at``.
3. The 1000th keyset page against the first, for one client with 60,000
   tasks: the page token is built with the service's codec from the row that
   ends page 999; timed as the repository's query and as a ListTasks RPC
   (target page 1000 / page 1 <= 2.0).

``--quick`` runs smaller sizes (a smoke run); then only the size-independent
target (WithdrawBid) is enforced.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import grpc.aio
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from marketplace_bids.domain.pagination import Keyset, decode_token, encode_token, filters_hash
from marketplace_bids.domain.ports import TaskFilter
from marketplace_bids.migrations import SCRIPT_LOCATION
from marketplace_bids.server import create_server
from marketplace_bids.settings import BidsSettings
from marketplace_bids.storage.repositories import task_list_statement
from marketplace_common import runtime
from marketplace_common.auth import hash_token
from marketplace_common.logging import configure_logging
from marketplace_common.migrations import upgrade_async
from marketplace_common.pg_admin import asyncpg_dsn, throwaway_database
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

T = TypeVar("T")

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL_ENV = "MARKETPLACE_BENCH_PG_URL"
BENCH_FILE = Path(__file__).resolve()
AGENT, AGENT_TOKEN = "bench-agent", "bench-agent-token-" + "a" * 40
ADMIN, ADMIN_TOKEN = "bench-admin", "bench-admin-token-" + "b" * 40
AS_AGENT = (("authorization", f"Bearer {AGENT_TOKEN}"),)
AS_ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
LIST_INDEX = "ix_tasks_client_email_created_at"
FORCE_SEQ = (
    "SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off; "
    "SET LOCAL enable_indexonlyscan = off"
)
_PG = asyncpg_dialect()  # type: ignore[no-untyped-call]
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sizes:
    label: str
    full: bool  # enforce the targets that need the full data size
    concurrency: int = 32
    withdraw_ops: int = 2000  # per timed round
    withdraw_rounds: int = 5  # per side, interleaved
    warmup_ops: int = 500  # per side
    tasks: int = 1_000_000
    clients: int = 10_000
    deep_tasks: int = 60_000  # the one client paged deep
    deep_page: int = 1000
    page_size: int = 50
    index_samples: int = 200
    seq_samples: int = 9
    page_samples: int = 100

    def __post_init__(self) -> None:
        if self.deep_tasks < self.deep_page * self.page_size or self.deep_tasks >= self.tasks:
            raise ValueError("deep_tasks must fill deep_page pages and leave tasks for others")


FULL = Sizes("full", full=True)
QUICK = Sizes(
    "quick",
    full=False,
    withdraw_ops=400,
    withdraw_rounds=3,
    warmup_ops=200,
    tasks=50_000,
    clients=500,
    deep_tasks=6_000,
    deep_page=100,
    index_samples=60,
    seq_samples=5,
    page_samples=30,
)


@dataclass(frozen=True)
class Result:
    name: str
    measured: str
    target: str
    ratio: float | None
    passed: bool
    enforced: bool

    @property
    def verdict(self) -> str:
        word = "PASS" if self.passed else "FAIL"
        return word if self.enforced else f"{word.lower()} (not enforced)"


@dataclass
class Report:
    sizes: Sizes
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a live process so far (Linux /proc); None when gone or unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    after_name = stat.rsplit(")", 1)[1].split()
    return (int(after_name[11]) + int(after_name[12])) / _CLOCK_TICKS


# --- database and service instances ------------------------------------------


def bench_settings(url: str, log_level: str, pool_size: int | None = None) -> BidsSettings:
    tokens = [
        f"{hash_token(AGENT_TOKEN)}=agent:{AGENT}",
        f"{hash_token(ADMIN_TOKEN)}=admin:{ADMIN}",
    ]
    settings = BidsSettings(
        grpc_port=0,
        metrics_port=0,
        database_url=url,
        auth_tokens=tokens,
        log_level=log_level,
        shutdown_grace_seconds=1.0,
    )
    if pool_size is not None:
        settings = settings.model_copy(update={"db_pool_size": pool_size})
    return settings


@dataclass(frozen=True)
class ServiceOptions:
    """How the bids instances are configured: the service's defaults unless told otherwise."""

    log_level: str = "INFO"
    pool_size: int | None = None  # None: the service's own db_pool_size default

    def argv(self) -> list[str]:
        pool = [] if self.pool_size is None else ["--service-pool-size", str(self.pool_size)]
        return ["--service-log-level", self.log_level, *pool]

    def describe(self) -> str:
        pool = "default" if self.pool_size is None else str(self.pool_size)
        return f"log level {self.log_level}, db_pool_size {pool}"


async def serve_instance(url: str, options: ServiceOptions) -> int:
    """The subprocess side: one bids service on port 0; prints the port, then serves.

    It stops on SIGTERM, and also when its stdin closes: the parent holds the
    other end, so a benchmark killed outright leaves no server behind.
    """
    settings = bench_settings(url, options.log_level, options.pool_size)
    configure_logging(settings.log_level, settings.log_json)
    server, port = await create_server(settings)
    print(port, flush=True)
    stdin = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    waits = [
        asyncio.ensure_future(server.serve_until_signal()),
        asyncio.ensure_future(stdin.read()),
    ]
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await server.stop(1.0)
    return 0


@dataclass(frozen=True)
class Instance:
    port: int
    pid: int


@asynccontextmanager
async def service_instances(
    url: str, count: int, options: ServiceOptions
) -> AsyncIterator[list[Instance]]:
    """``count`` bids service subprocesses on ``url`` (logs kept in temporary files)."""
    procs: list[tuple[asyncio.subprocess.Process, IO[str]]] = []
    try:
        for _ in range(count):
            log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed below)
            args = ["--serve-instance", url, *options.argv()]
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(BENCH_FILE),
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
            procs.append((proc, log))
        yield [Instance(await _read_port(proc, out), proc.pid) for proc, out in procs]
    finally:
        for proc, _ in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc, out in procs:
            try:
                await asyncio.wait_for(proc.wait(), timeout=20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
            out.close()


async def _read_port(proc: asyncio.subprocess.Process, log: IO[str]) -> int:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
    if not line.strip().isdigit():
        log.seek(0)
        raise RuntimeError(f"a bids instance did not start:\n{log.read()[-2000:]}")
    return int(line)


# --- 1. WithdrawBid ------------------------------------------------------------

SELECT_BID = (
    "SELECT bids.bid_id, bids.marketplace, bids.job_id, bids.agent_id, bids.amount_currency, "
    "bids.amount_units, bids.amount_nanos, bids.proposal, bids.status, bids.created_at, "
    "bids.updated_at FROM bids WHERE bids.bid_id = $1::VARCHAR FOR NO KEY UPDATE"
)
SELECT_KEY = (
    "SELECT idempotency_keys.fingerprint, idempotency_keys.response FROM idempotency_keys "
    "WHERE idempotency_keys.scope = $1::VARCHAR AND idempotency_keys.key = $2::VARCHAR"
)
UPDATE_BID = (
    "UPDATE bids SET status=$1::VARCHAR, updated_at=$2::TIMESTAMP WITH TIME ZONE "
    "WHERE bids.bid_id = $3::VARCHAR"
)
INSERT_EVENT = (
    "INSERT INTO bid_events (event_id, bid_id, previous_status, new_status, reason, actor, "
    "created_at) VALUES ($1::VARCHAR, $2::VARCHAR, $3::VARCHAR, $4::VARCHAR, $5::VARCHAR, "
    "$6::VARCHAR, $7::TIMESTAMP WITH TIME ZONE)"
)
INSERT_KEY = (
    "INSERT INTO idempotency_keys (scope, key, fingerprint, response, created_at) VALUES "
    "($1::VARCHAR, $2::VARCHAR, $3::VARCHAR, $4::BYTEA, $5::TIMESTAMP WITH TIME ZONE)"
)
BID_COLUMNS = (
    "bid_id",
    "marketplace",
    "job_id",
    "agent_id",
    "amount_currency",
    "amount_units",
    "amount_nanos",
    "proposal",
    "status",
    "created_at",
    "updated_at",
)


async def place_pending_bids(dsn: str, count: int) -> list[str]:
    """``count`` PENDING bids of the bench agent (one per job), loaded with COPY."""
    now = datetime.now(UTC)
    ids = [str(uuid.uuid4()) for _ in range(count)]
    records = [
        (
            bid_id,
            "bench",
            f"job-{i}",
            AGENT,
            "EUR",
            250,
            500_000_000,
            "I will do it well.",
            "PENDING",
            now,
            now,
        )
        for i, bid_id in enumerate(ids)
    ]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table("bids", records=records, columns=BID_COLUMNS)
    finally:
        await conn.close()
    return ids


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
    ids = await place_pending_bids(dsn, total)
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
        withdrawn = await conns[0].fetchval("SELECT count(*) FROM bids WHERE status = 'WITHDRAWN'")
        events = await conns[0].fetchval("SELECT count(*) FROM bid_events")
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


# --- 2 and 3. ListTasks ----------------------------------------------------------

TASK_COLUMNS = (
    "task_id",
    "client_email",
    "title",
    "description",
    "budget_currency",
    "budget_units",
    "budget_nanos",
    "status",
    "created_at",
    "updated_at",
)
STATUSES = ("PENDING", "PROCESSING", "COMPLETED", "FAILED")


@dataclass(frozen=True)
class LoadedTasks:
    heavy: str  # the client with deep_tasks tasks
    sample: list[str]  # ordinary clients to list
    note: str


def task_records(sizes: Sizes, emails: list[str], heavy: str) -> Iterator[tuple[object, ...]]:
    rng, base = random.Random(7), datetime(2025, 1, 1, tzinfo=UTC)
    span = 365 * 86_400 * 1_000_000
    for i in range(sizes.tasks):
        email = heavy if i < sizes.deep_tasks else emails[i % len(emails)]
        created = base + timedelta(microseconds=rng.randrange(span))
        yield (
            str(uuid.uuid4()),
            email,
            "Benchmark task",
            "Loaded by bench/bids_bench.py.",
            "EUR",
            100 + i % 900,
            0,
            STATUSES[i % 4],
            created,
            created,
        )


async def load_tasks(dsn: str, sizes: Sizes) -> LoadedTasks:
    """COPY the tasks into the migrated table, rebuild its secondary indexes, VACUUM ANALYZE."""
    emails = [f"client{i:05d}@example.com" for i in range(sizes.clients)]
    heavy = "deep.pager@example.com"
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET maintenance_work_mem = '256MB'; SET synchronous_commit = off")
        indexes = await conn.fetch(
            "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS ddl "
            "FROM pg_index i WHERE i.indrelid = 'tasks'::regclass AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
        )
        if LIST_INDEX not in {row["name"] for row in indexes}:
            raise RuntimeError(f"the migrations did not create {LIST_INDEX}")
        for row in indexes:  # a bulk load is faster with the indexes built once, after it
            await conn.execute(f'DROP INDEX "{row["name"]}"')
        records = task_records(sizes, emails, heavy)
        await conn.copy_records_to_table("tasks", records=records, columns=TASK_COLUMNS)
        copied = time.perf_counter() - started
        for row in indexes:  # the migrations' own definitions, as pg_get_indexdef gave them
            await conn.execute(row["ddl"])
        await conn.execute("VACUUM (ANALYZE) tasks")
        count = await conn.fetchval("SELECT count(*) FROM tasks")
    finally:
        await conn.close()
    note = (
        f"loaded {count:,} tasks ({sizes.clients:,} clients + one with {sizes.deep_tasks:,}) in "
        f"{time.perf_counter() - started:.1f} s: COPY {copied:.1f} s, then the {len(indexes)} "
        f"secondary indexes rebuilt from their migrated definitions, VACUUM ANALYZE"
    )
    return LoadedTasks(heavy, random.Random(3).sample(emails, min(50, len(emails))), note)


def list_query(filters: TaskFilter, after: Keyset | None, limit: int) -> tuple[str, list[Any]]:
    """The repository's ListTasks statement as PostgreSQL/asyncpg SQL and its arguments."""
    compiled = task_list_statement(filters, after, limit).compile(dialect=_PG)
    args = []
    for name in compiled.positiontup or ():
        processor = compiled.binds[name].type.bind_processor(_PG)
        value = compiled.params[name]
        args.append(processor(value) if processor else value)
    return compiled.string, args


async def plan(conn: Any, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
    """Every node of the EXPLAIN plan of ``sql``."""
    doc = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args))
    nodes, todo = [], [doc[0]["Plan"]]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo.extend(node.get("Plans", []))
    return nodes


def uses_index(nodes: list[dict[str, Any]]) -> bool:
    names = {node.get("Index Name") for node in nodes}
    return LIST_INDEX in names and not any(n["Node Type"] == "Seq Scan" for n in nodes)


def describe(nodes: list[dict[str, Any]]) -> str:
    scans = [n for n in nodes if "Scan" in n["Node Type"]]
    return ", ".join(
        n["Node Type"] + (f" on {n['Index Name']}" if "Index Name" in n else "") for n in scans
    )


async def timed_fetch(conn: Any, sql: str, args: Sequence[Any], expect: int) -> float:
    started = time.perf_counter()
    rows = await conn.fetch(sql, *args)
    took = time.perf_counter() - started
    if len(rows) != expect:
        raise RuntimeError(f"the list query returned {len(rows)} rows, not {expect}")
    return took


async def timed_seq_fetch(conn: Any, sql: str, args: Sequence[Any], expect: int) -> float:
    """``timed_fetch`` with index and bitmap scans switched off for one transaction."""
    async with conn.transaction():
        await conn.execute(FORCE_SEQ)
        return await timed_fetch(conn, sql, args, expect)


async def bench_index_vs_seq(dsn: str, sizes: Sizes, loaded: LoadedTasks) -> list[Result]:
    limit = sizes.page_size + 1
    queries = [list_query(TaskFilter(client_email=email), None, limit) for email in loaded.sample]
    sql, per_seq = queries[0][0], max(1, sizes.index_samples // sizes.seq_samples)
    idx, seq = await asyncpg.connect(dsn), await asyncpg.connect(dsn)  # plans cached apart
    try:
        counts = dict(
            await idx.fetch(
                "SELECT client_email, count(*) FROM tasks WHERE client_email = ANY($1::text[]) "
                "GROUP BY client_email",
                loaded.sample,
            )
        )
        expect = [min(limit, counts.get(email, 0)) for email in loaded.sample]
        for i in range(min(5, len(queries))):  # warm up both
            await timed_fetch(idx, sql, queries[i][1], expect[i])
        await timed_seq_fetch(seq, sql, queries[0][1], expect[0])
        index_times, seq_times = [], []
        for rep in range(sizes.seq_samples):
            for i in (k % len(queries) for k in range(rep * per_seq, (rep + 1) * per_seq)):
                index_times.append(await timed_fetch(idx, sql, queries[i][1], expect[i]))
            i = rep % len(queries)
            seq_times.append(await timed_seq_fetch(seq, sql, queries[i][1], expect[i]))
        index_plan = await plan(idx, sql, queries[0][1])
        async with seq.transaction():
            await seq.execute(FORCE_SEQ)
            seq_plan = await plan(seq, sql, queries[0][1])
    finally:
        await idx.close()
        await seq.close()
    index_median, seq_median = statistics.median(index_times), statistics.median(seq_times)
    ratio = seq_median / index_median
    explain_ok = uses_index(index_plan) and any(n["Node Type"] == "Seq Scan" for n in seq_plan)
    return [
        Result(
            f"ListTasks by client_email on {sizes.tasks:,} tasks: forced seq scan / index",
            f"index {ms(index_median)} vs seq scan {ms(seq_median)} "
            f"(medians of {len(index_times)} / {len(seq_times)}, page of {sizes.page_size})",
            ">= 100x",
            ratio,
            ratio >= 100,
            enforced=sizes.full,
        ),
        Result(
            "ListTasks EXPLAIN: indexed run uses the index, forced run does not",
            f"indexed: {describe(index_plan)}; forced: {describe(seq_plan)}",
            f"Index Scan on {LIST_INDEX}",
            None,
            explain_ok,
            enforced=sizes.full,
        ),
    ]


@dataclass(frozen=True)
class DeepPage:
    filters: TaskFilter
    token: str  # the service's page token for page ``sizes.deep_page``
    first_id: str  # the task that must open that page


def list_scope(filters: TaskFilter) -> str:
    """The filter hash TaskService.list_tasks puts in (and checks on) its page tokens."""
    return filters_hash("tasks", {f.name: getattr(filters, f.name) for f in fields(filters)})


async def deep_page_token(conn: Any, sizes: Sizes, heavy: str) -> DeepPage:
    """The token the service hands out with page ``deep_page - 1``, built with its codec."""
    filters = TaskFilter(client_email=heavy)
    position = (sizes.deep_page - 1) * sizes.page_size - 1  # the last row of that page
    rows = await conn.fetch(
        "SELECT created_at, task_id FROM tasks WHERE client_email = $1 "
        "ORDER BY created_at DESC, task_id DESC OFFSET $2 LIMIT 2",
        heavy,
        position,
    )
    token = encode_token(Keyset(rows[0]["created_at"], rows[0]["task_id"]), list_scope(filters))
    return DeepPage(filters, token, rows[1]["task_id"])


def alternating(n: int, pair: tuple[T, T]) -> Iterator[T]:
    """``n`` rounds over both of ``pair``, alternating which goes first."""
    for i in range(n):
        yield from pair if i % 2 == 0 else pair[::-1]


async def time_pages_by_query(conn: Any, sizes: Sizes, deep: DeepPage) -> Result:
    limit, page = sizes.page_size + 1, sizes.deep_page
    after = decode_token(deep.token, list_scope(deep.filters))  # as list_tasks does
    first, deepest = list_query(deep.filters, None, limit), list_query(deep.filters, after, limit)
    if (await conn.fetch(deepest[0], *deepest[1]))[0]["task_id"] != deep.first_id:
        raise RuntimeError("the keyset query does not open the page at the expected row")
    times: dict[str, list[float]] = {"first": [], "deep": []}
    for i, (key, (sql, args)) in enumerate(
        alternating(sizes.page_samples + 2, (("first", first), ("deep", deepest)))
    ):
        took = await timed_fetch(conn, sql, args, limit)
        if i >= 4:  # the first two rounds warm up
            times[key].append(took)
    plans = [await plan(conn, *query) for query in (first, deepest)]
    first_ms, deep_ms = statistics.median(times["first"]), statistics.median(times["deep"])
    ratio, indexed = deep_ms / first_ms, all(uses_index(nodes) for nodes in plans)
    return Result(
        f"Keyset page {page} / page 1 (query, {sizes.deep_tasks:,} tasks of one client)",
        f"page {page} {ms(deep_ms)} vs page 1 {ms(first_ms)} (medians of {sizes.page_samples}); "
        f"plans: {describe(plans[1])} / {describe(plans[0])}",
        "<= 2.0x",
        ratio,
        ratio <= 2.0 and indexed,
        enforced=sizes.full,
    )


async def time_pages_by_rpc(port: int, sizes: Sizes, deep: DeepPage) -> Result:
    page, email = sizes.deep_page, deep.filters.client_email
    times: dict[str, list[float]] = {"": [], deep.token: []}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = bids_pb2_grpc.BidServiceStub(channel)
        for i, token in enumerate(alternating(sizes.page_samples + 2, ("", deep.token))):
            req = bids_pb2.ListTasksRequest(
                client_email=email, page_size=sizes.page_size, page_token=token
            )
            started = time.perf_counter()
            reply = await stub.ListTasks(req, timeout=30, metadata=AS_ADMIN)
            if i >= 4:  # the first two rounds warm up
                times[token].append(time.perf_counter() - started)
            if token and reply.tasks[0].task_id != deep.first_id:
                raise RuntimeError("ListTasks with the deep token opened the wrong page")
    first_ms, deep_ms = statistics.median(times[""]), statistics.median(times[deep.token])
    ratio = deep_ms / first_ms
    return Result(
        f"Keyset page {page} / page 1 (ListTasks RPC, {sizes.deep_tasks:,} tasks of one client)",
        f"page {page} {ms(deep_ms)} vs page 1 {ms(first_ms)} (medians of {sizes.page_samples})",
        "<= 2.0x",
        ratio,
        ratio <= 2.0,
        enforced=sizes.full,
    )


async def bench_deep_page(dsn: str, sizes: Sizes, heavy: str, port: int) -> list[Result]:
    conn = await asyncpg.connect(dsn)
    try:
        deep = await deep_page_token(conn, sizes, heavy)
        by_query = await time_pages_by_query(conn, sizes, deep)
    finally:
        await conn.close()
    return [by_query, await time_pages_by_rpc(port, sizes, deep)]


# --- the run -------------------------------------------------------------------


async def run_benchmarks(url: str, sizes: Sizes, options: ServiceOptions | None = None) -> Report:
    """Every measurement on the (empty) database at ``url``, which is migrated first."""
    report = Report(sizes)
    progress("migrating the bench database (the service's Alembic migrations)")
    await upgrade_async(url, SCRIPT_LOCATION)
    dsn = asyncpg_dsn(url)
    options = options or ServiceOptions()
    async with service_instances(url, 2, options) as instances:
        report.notes.append(
            f"bids service: 2 subprocess instances (create_server, port 0), auth on, "
            f"{options.describe()}; machine: {os.cpu_count()} CPUs"
        )
        report.results.append(await bench_withdraw(dsn, instances, sizes))
        progress(f"loading {sizes.tasks:,} tasks with COPY")
        loaded = await load_tasks(dsn, sizes)
        report.notes.append(loaded.note)
        progress("ListTasks: index vs forced sequential scan")
        report.results += await bench_index_vs_seq(dsn, sizes, loaded)
        progress(f"ListTasks: keyset page {sizes.deep_page} vs page 1")
        report.results += await bench_deep_page(dsn, sizes, loaded.heavy, instances[0].port)
    return report


def format_report(report: Report, elapsed: float) -> str:
    header = ("measurement", "target", "ratio", "result")
    rows = [header] + [
        (r.name, r.target, "-" if r.ratio is None else f"{r.ratio:.2f}", r.verdict)
        for r in report.results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"bids benchmark on PostgreSQL, {report.sizes.label} sizes", ""]
    for i, row in enumerate(rows):
        lines.append(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if i == 0:
            lines.append("-+-".join("-" * w for w in widths))
    lines += ["", "measured:"] + [f"- {r.name}: {r.measured}" for r in report.results]
    lines += ["", "notes:"] + [f"- {note}" for note in report.notes]
    lines.append(f"total run time: {elapsed:.1f} s")
    return "\n".join(lines)


def failed(report: Report) -> bool:
    return any(r.enforced and not r.passed for r in report.results)


def service_options(args: argparse.Namespace) -> ServiceOptions:
    return ServiceOptions(args.service_log_level, args.service_pool_size)


async def amain(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    this = asyncio.current_task()
    if this is not None:  # SIGTERM unwinds like Ctrl-C: instances stopped, database dropped
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this.cancel)
    sizes = QUICK if args.quick else FULL
    async with throwaway_database(args.pg_url, prefix="marketplace_bench") as url:
        report = await run_benchmarks(url, sizes, service_options(args))
    print(format_report(report, time.perf_counter() - started))
    return 1 if failed(report) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Bids service benchmark on PostgreSQL.")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(PG_URL_ENV, DEFAULT_PG_URL),
        help=f"admin URL; the run creates and drops its own database there (env {PG_URL_ENV})",
    )
    parser.add_argument(
        "--service-log-level", default="INFO", help="the bids instances' log level (INFO)"
    )
    parser.add_argument(
        "--service-pool-size", type=int, help="the bids instances' db_pool_size (their default)"
    )
    parser.add_argument("--serve-instance", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_instance:
        return runtime.run(serve_instance(args.serve_instance, service_options(args)))
    try:
        return runtime.run(amain(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: the instances were stopped and the database dropped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
