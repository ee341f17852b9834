"""Executions end to end: the bids service and two execution replicas as processes on PostgreSQL.

Every service runs as its own process from its console script's ``serve``
(through ``e2ebench.serve``, which adds only an event-loop lag probe): the
bids service (``bids-service serve --migrate``, auth on, its own database)
and execution replicas (``execution-service serve``, offline provider with no
latency and no faults, one shared database, auth on towards the bids service
with a service token). Both databases are throwaway ones next to
``--pg-url`` / ``MARKETPLACE_BENCH_PG_URL``.

A. Throughput: N tasks are made through the bids API first (PlaceBid, then
   AcceptBid; not timed). Then N SubmitExecution calls (``--in-flight`` at a
   time, spread over the replicas) are timed from the first submit to the
   last COMPLETED (the time the bids service stamped on the task's
   completion event). Target: >= 200 executions/s.
B. Pacing: N executions with a pacing delay (1 s, +/-10 %) each. They are
   submitted first through an API-only replica (``EXECUTION_WORKERS=0``, not
   timed) and held back (their lease set a day ahead, in SQL); two replicas
   with enough workers to run all at once start and serve; then one UPDATE
   makes every held execution claimable again, and the wall time runs from
   just before that release to the last COMPLETED (the bids service's
   stamp). Process start-up is not counted; the replicas find the released
   work by polling (``--paced-poll-seconds``, 0.1 s by default).
   Target: wall <= 1.5x the delay.

After each row the bids side is checked through its API: every task is
COMPLETED (ListTasks) with exactly one completion event (ListTaskEvents).
Each row prints every process's event-loop lag p99 and max over the timed
window and its CPU seconds per execution. Exits 1 when a target is missed
or a task was not completed exactly once.

Run: ``.venv/bin/python bench/execution_e2e_bench.py`` (``make bench-execution-e2e``;
part of ``make bench``). ``--only a`` / ``--only b`` runs one row; ``--profile DIR``
samples every process with py-spy during row A (raw collapsed stacks in DIR,
summarized like bench/profile_rpc.py).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import grpc
import grpc.aio
from e2ebench.bids_side import (
    AS_AGENT,
    SERVICE_TOKEN,
    BidsVerdict,
    bids_tokens,
    execution_tokens,
    gather_limited,
    make_tasks,
    verify,
    wait_finished,
)
from e2ebench.processes import Lag, ServiceProcess
from marketplace.execution.v1 import execution_pb2, execution_pb2_grpc
from marketplace_common import runtime
from marketplace_common.migrations import upgrade_async
from marketplace_common.pg_admin import asyncpg_dsn, throwaway_database
from marketplace_execution.migrations import MIGRATIONS_DIR

PG_URL_ENV = "MARKETPLACE_BENCH_PG_URL"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
RATE_TARGET = 200.0
PACED_TARGET = 1.5


@dataclass
class Options:
    executions: int
    paced: int
    delay: float
    replicas: int
    workers: int
    in_flight: int
    log_level: str
    bids_pool: int
    execution_pool: int
    poll_seconds: float
    paced_poll_seconds: float
    profile: Path | None
    extra_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Row:
    name: str
    executions: int
    wall: float
    verdict: BidsVerdict
    lags: dict[str, Lag]
    cpu: dict[str, float]
    db: dict[str, tuple[int, int]]
    """Per database: transactions committed and sessions opened during the window."""
    note: str = ""

    @property
    def rate(self) -> float:
        return self.executions / self.wall if self.wall > 0 else 0.0


class Stack:
    """The bids service (started once) and the execution replicas of one row."""

    def __init__(self, workdir: Path, bids_url: str, execution_url: str, opts: Options) -> None:
        self.workdir = workdir
        self.bids_url = bids_url
        self.execution_url = execution_url
        self.opts = opts
        self.bids = ServiceProcess(
            "bids",
            "bids",
            {
                "BIDS_DATABASE_URL": bids_url,
                "BIDS_AUTH_TOKENS": bids_tokens(),
                "BIDS_LOG_LEVEL": opts.log_level,
                "BIDS_DB_POOL_SIZE": str(opts.bids_pool),
            },
            workdir,
            migrate=True,
        )
        self._count = 0

    def replica(
        self, workers: int, delay: float = 0.0, poll: float | None = None
    ) -> ServiceProcess:
        self._count += 1
        settings = {
            "EXECUTION_DATABASE_URL": self.execution_url,
            "EXECUTION_BIDS_TARGET": self.bids.target,
            "EXECUTION_BIDS_TOKEN": SERVICE_TOKEN,
            "EXECUTION_AUTH_TOKENS": execution_tokens(),
            "EXECUTION_LLM_PROVIDER": "offline",
            "EXECUTION_WORKERS": str(workers),
            "EXECUTION_DB_POOL_SIZE": str(self.opts.execution_pool),
            "EXECUTION_POLL_SECONDS": str(poll or self.opts.poll_seconds),
            "EXECUTION_LOG_LEVEL": self.opts.log_level,
            "EXECUTION_PACING_DELAY_SECONDS": str(delay),
            "EXECUTION_PACING_JITTER": "0.1",
            **self.opts.extra_env,
        }
        return ServiceProcess("execution", f"replica-{self._count}", settings, self.workdir)


@asynccontextmanager
async def running(processes: list[ServiceProcess]) -> AsyncIterator[list[ServiceProcess]]:
    try:
        for process in processes:
            process.start()
        await asyncio.gather(*(p.wait_serving() for p in processes))
        yield processes
    finally:
        await asyncio.gather(*(p.stop() for p in processes))


_AGAIN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass
class Submitted:
    execution_ids: list[str]
    retries: int
    """Submits answered UNAVAILABLE or DEADLINE_EXCEEDED, sent again with the same request_id."""


async def submit_all(
    replicas: list[ServiceProcess], task_ids: list[str], in_flight: int
) -> Submitted:
    """SubmitExecution for every task, spread over ``replicas``; UNAVAILABLE and
    DEADLINE_EXCEEDED are retried with the same request_id (the call is idempotent),
    as a client would."""
    channels = [grpc.aio.insecure_channel(r.target) for r in replicas]
    retries = 0
    try:
        stubs = [execution_pb2_grpc.ExecutionServiceStub(c) for c in channels]

        def job(i: int, task_id: str) -> Callable[[], Awaitable[str]]:
            async def submit() -> str:
                nonlocal retries
                request = execution_pb2.SubmitExecutionRequest(
                    request_id=str(uuid.uuid4()), task_id=task_id
                )
                for attempt in range(10):
                    try:
                        reply = await stubs[(i + attempt) % len(stubs)].SubmitExecution(
                            request, metadata=AS_AGENT, timeout=60
                        )
                        return str(reply.execution.execution_id)
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() not in _AGAIN or attempt == 9:
                            raise
                        retries += 1
                        await asyncio.sleep(0.1 * (attempt + 1))
                raise AssertionError("unreachable")

            return submit

        ids = await gather_limited(in_flight, [job(i, t) for i, t in enumerate(task_ids)])
        return Submitted(ids, retries)
    finally:
        for channel in channels:
            await channel.close(None)


def _py_spy() -> str | None:
    return shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")


async def _start_profiles(
    processes: list[ServiceProcess], out: Path
) -> list[asyncio.subprocess.Process]:
    spy = _py_spy()
    if spy is None:
        raise SystemExit("py-spy not found: make .venv/.installed-dev installs it")
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before the window)
    started = []
    for process in processes:
        command = [spy, "record", "--pid", str(process.pid), "--rate", "100", "--nonblocking"]
        command += ["--format", "raw", "--output", str(out / f"{process.label}.txt")]
        started.append(
            await asyncio.create_subprocess_exec(
                *command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        )
    await asyncio.sleep(1.0)  # py-spy attaches
    return started


async def _stop_profiles(spies: list[asyncio.subprocess.Process]) -> None:
    for spy in spies:
        if spy.returncode is None:
            spy.send_signal(subprocess.signal.SIGINT)  # type: ignore[attr-defined]
    for spy in spies:
        await spy.wait()


async def _db_counters(stack: Stack) -> dict[str, tuple[int, int]]:
    """(committed transactions, sessions opened) so far, per database (pg_stat_database)."""
    found = {}
    for name, url in (("bids", stack.bids_url), ("execution", stack.execution_url)):
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            row = await conn.fetchrow(
                "SELECT xact_commit, sessions FROM pg_stat_database "
                "WHERE datname = current_database()"
            )
        finally:
            await conn.close()
        found[name] = (int(row[0]), int(row[1]))
    return found


def _db_delta(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    # the statistics lag by up to PGSTAT_MIN_INTERVAL (1 s); read after a pause
    return {k: (after[k][0] - before[k][0], after[k][1] - before[k][1]) for k in after}


async def _window_start(processes: list[ServiceProcess]) -> dict[str, float]:
    for process in processes:
        await process.lag()  # starts the lag window
    return {p.label: p.cpu() for p in processes}


async def _window_end(
    processes: list[ServiceProcess], cpu_before: dict[str, float]
) -> tuple[dict[str, Lag], dict[str, float]]:
    lags = {p.label: await p.lag() for p in processes}
    return lags, {p.label: p.cpu() - cpu_before[p.label] for p in processes}


async def row_a(stack: Stack) -> Row:
    opts = stack.opts
    n = opts.executions
    email = f"e2e-a-{uuid.uuid4().hex[:8]}@example.com"
    task_ids = await make_tasks(stack.bids.target, n, email)
    replicas = [stack.replica(opts.workers) for _ in range(opts.replicas)]
    async with running(replicas):
        processes = [stack.bids, *replicas]
        spies = await _start_profiles(processes, opts.profile) if opts.profile else []
        db = await _db_counters(stack)
        cpu = await _window_start(processes)
        started = time.time()
        submits = await submit_all(replicas, task_ids, opts.in_flight)
        submitted = time.time() - started
        done = await wait_finished(asyncpg_dsn(stack.bids_url), task_ids, max(120.0, n / 5))
        lags, cpu = await _window_end(processes, cpu)
        await _stop_profiles(spies)
        await asyncio.sleep(1.1)
        db = _db_delta(db, await _db_counters(stack))
    verdict = await verify(stack.bids.target, email, task_ids)
    end = verdict.last_completed or time.time()
    note = (
        f"submits took {submitted:.1f} s ({submits.retries} answered UNAVAILABLE or "
        f"DEADLINE_EXCEEDED and were sent again); {done} of {n} tasks finished before the timeout"
    )
    return Row("A", n, end - started, verdict, lags, cpu, db, note)


async def _hold_queued(url: str, hold: bool) -> float:
    """Makes the QUEUED executions unclaimable (a lease in the future), or claimable again
    at once; returns the time (epoch seconds) just before the release committed."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        at = time.time()
        if hold:
            await conn.execute(
                "UPDATE executions SET lease_expires_at = now() + interval '1 day' "
                "WHERE status = 'QUEUED'"
            )
        else:
            await conn.execute(
                "UPDATE executions SET lease_expires_at = created_at WHERE status = 'QUEUED'"
            )
        return at
    finally:
        await conn.close()


async def row_b(stack: Stack) -> Row:
    opts = stack.opts
    n = opts.paced
    email = f"e2e-b-{uuid.uuid4().hex[:8]}@example.com"
    task_ids = await make_tasks(stack.bids.target, n, email)
    api = [stack.replica(0)]
    async with running(api):
        await submit_all(api, task_ids, opts.in_flight)
    await _hold_queued(stack.execution_url, hold=True)
    per_replica = math.ceil(n / opts.replicas)
    replicas = [
        stack.replica(per_replica, opts.delay, poll=opts.paced_poll_seconds)
        for _ in range(opts.replicas)
    ]
    async with running(replicas):
        processes = [stack.bids, *replicas]
        db = await _db_counters(stack)
        cpu = await _window_start(processes)
        released = await _hold_queued(stack.execution_url, hold=False)
        limit = max(120.0, 30 * opts.delay)
        done = await wait_finished(asyncpg_dsn(stack.bids_url), task_ids, limit)
        lags, cpu = await _window_end(processes, cpu)
        await asyncio.sleep(1.1)
        db = _db_delta(db, await _db_counters(stack))
    verdict = await verify(stack.bids.target, email, task_ids)
    end = verdict.last_completed or time.time()
    first = verdict.first_start or end
    note = (
        f"workers {per_replica} per replica, EXECUTION_POLL_SECONDS {opts.paced_poll_seconds}; "
        f"first StartTask {first - released:.2f} s after the release; "
        f"{done} of {n} tasks finished within {limit:.0f} s"
    )
    return Row("B", n, end - released, verdict, lags, cpu, db, note)


def _print_row(row: Row, opts: Options) -> bool:
    v = row.verdict
    once = f"{v.completed_once}/{v.tasks}"
    events = ", ".join(f"{k} event(s): {c}" for k, c in sorted(v.completion_events.items()))
    if row.name == "A":
        ok = row.rate >= RATE_TARGET
        print(
            f"A) {row.executions} executions end to end, {opts.replicas} replicas, "
            f"{opts.workers} workers each, {opts.in_flight} submits in flight"
        )
        print(f"   first submit to last COMPLETED: {row.wall:.2f} s = {row.rate:.1f} executions/s "
              f"(target >= {RATE_TARGET:.0f}: {'met' if ok else 'NOT met'})")  # fmt: skip
    else:
        ok = row.wall / opts.delay <= PACED_TARGET
        print(f"B) {row.executions} executions, pacing delay {opts.delay:.1f} s (+/-10 %), "
              f"{opts.replicas} replicas")  # fmt: skip
        print(f"   release to last COMPLETED: {row.wall:.2f} s = "
              f"{row.wall / opts.delay:.2f}x the delay "
              f"(target <= {PACED_TARGET}: {'met' if ok else 'NOT met'})")  # fmt: skip
    print(f"   completed exactly once (bids side): {once} ({events}; "
          f"COMPLETED now: {v.completed}) {'yes' if v.exactly_once else 'NO'}")  # fmt: skip
    for label, lag in row.lags.items():
        per = 1000 * row.cpu[label] / row.executions
        print(f"   {label:<10} event-loop lag p99 {lag.p99_ms:7.1f} ms, max {lag.max_ms:7.1f} ms; "
              f"CPU {row.cpu[label]:6.1f} s ({per:.2f} ms per execution)")  # fmt: skip
    for name, (xacts, sessions) in row.db.items():
        per = 1000 * sessions / row.executions
        print(f"   {name + ' database':<19} {xacts / row.executions:6.2f} transactions per "
              f"execution, {per:6.1f} sessions opened per 1000 executions")  # fmt: skip
    print(f"   {row.note}")
    return ok and v.exactly_once


async def amain(args: argparse.Namespace) -> int:
    opts = Options(
        executions=args.executions,
        paced=args.paced,
        delay=args.delay,
        replicas=args.replicas,
        workers=args.workers,
        in_flight=args.in_flight,
        log_level=args.log_level,
        bids_pool=args.bids_pool,
        execution_pool=args.execution_pool,
        poll_seconds=args.poll_seconds,
        paced_poll_seconds=args.paced_poll_seconds,
        profile=args.profile,
        extra_env=dict(kv.split("=", 1) for kv in args.env),
    )
    load = os.getloadavg()
    print(f"Executions end to end: bids service + {opts.replicas} execution replicas as "
          f"processes on PostgreSQL, offline provider (no latency, no faults), "
          f"log level {opts.log_level}, pools bids {opts.bids_pool} / replica "
          f"{opts.execution_pool}; load average before: {load[0]:.2f}", flush=True)  # fmt: skip
    rows = []
    async with AsyncExitStack() as stack_ctx:
        bids_url = await stack_ctx.enter_async_context(
            throwaway_database(args.pg_url, prefix="marketplace_e2e_bids")
        )
        execution_url = await stack_ctx.enter_async_context(
            throwaway_database(args.pg_url, prefix="marketplace_e2e_exec")
        )
        await upgrade_async(execution_url, MIGRATIONS_DIR)
        if args.logs is None:
            workdir = Path(stack_ctx.enter_context(tempfile.TemporaryDirectory()))
        else:
            workdir = args.logs
            workdir.mkdir(parents=True, exist_ok=True)
        stack = Stack(workdir, bids_url, execution_url, opts)
        async with running([stack.bids]):
            try:
                if args.only in (None, "a"):
                    rows.append(await row_a(stack))
                    _print_row(rows[-1], opts)
                if args.only in (None, "b"):
                    rows.append(await row_b(stack))
                    _print_row(rows[-1], opts)
            except Exception:
                for log in sorted(workdir.glob("*.log")):
                    print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
                raise
    if opts.profile:
        from profile_rpc import summarize

        for raw in sorted(opts.profile.glob("*.txt")):
            print(f"--- profile of {raw.stem} (row A)\n{summarize(str(raw), top=30)}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    ok = True
    for row in rows:
        if row.name == "A":
            ok &= row.rate >= RATE_TARGET and row.verdict.exactly_once
        else:
            ok &= row.wall / opts.delay <= PACED_TARGET and row.verdict.exactly_once
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--executions", type=int, default=2000, help="row A's N (2000)")
    parser.add_argument("--paced", type=int, default=1000, help="row B's N (1000)")
    parser.add_argument("--delay", type=float, default=1.0, help="row B's pacing delay (1.0 s)")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--workers", type=int, default=64, help="row A's workers per replica")
    parser.add_argument("--in-flight", type=int, default=64, help="submits in flight")
    parser.add_argument("--log-level", default="INFO", help="both services' (INFO, the default)")
    parser.add_argument(
        "--bids-pool",
        type=int,
        default=12,
        help="BIDS_DB_POOL_SIZE (12; each process adds 10 overflow)",
    )
    parser.add_argument(
        "--execution-pool", type=int, default=12, help="EXECUTION_DB_POOL_SIZE per replica (12)"
    )
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="EXECUTION_POLL_SECONDS")
    parser.add_argument(
        "--paced-poll-seconds", type=float, default=0.1, help="row B's EXECUTION_POLL_SECONDS"
    )
    parser.add_argument("--only", choices=("a", "b"))
    parser.add_argument("--logs", type=Path, help="keep the services' logs in this directory")
    parser.add_argument("--profile", type=Path, help="py-spy every process during row A")
    parser.add_argument(
        "--env", action="append", default=[], help="extra KEY=VALUE for the replicas"
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(PG_URL_ENV, DEFAULT_PG_URL),
        help=f"admin URL; the run creates and drops its databases there (env {PG_URL_ENV})",
    )
    return runtime.run(amain(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
