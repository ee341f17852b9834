"""The execution service's PostgreSQL queue beside procrastinate and PgQueuer, in one run.

Each queue gets its own throwaway database on one PostgreSQL server
(``--pg-url`` / ``MARKETPLACE_BENCH_PG_URL``, default 127.0.0.1:5432), then:

1. enqueue N no-op jobs, one job per call, ``--concurrency`` callers at a time
   (SubmitExecution stores one execution per call, so the libraries' batch
   enqueue is not used);
2. process them with one worker process-equivalent running ``--concurrency``
   jobs at a time, until every job is done;
3. check that every job ran exactly once.

What a "job" is for each queue:

* ours: ``SqlExecutionStore`` as the worker pool uses it. Enqueue is
  ``create`` (an execution row, QUEUED); processing is ``claim`` (``FOR UPDATE
  SKIP LOCKED``, up to the free slots in one transaction, a 30 s lease), then
  the two fenced writes every execution ends with: ``decide`` (the outcome) and
  ``finish`` (terminal status, lease released). The writes a real run adds
  (RUNNING, attempt rows) are the product's records, not the queue's, and are
  left out here as they would stay beside any queue library.
* procrastinate: a task ``noop``; ``defer_async`` per job; ``run_worker_async``
  with ``concurrency`` and ``wait=False`` (the worker stops once the queue is
  empty); jobs are kept (status ``succeeded``), as in its default.
* PgQueuer: an entrypoint ``noop``; ``Queries.enqueue`` per job;
  ``QueueManager.run`` in drain mode with ``batch_size = concurrency``.

Prints jobs/s for enqueueing and processing side by side, and the processing
rate of each library over ours. Needs the ``queue-bench`` extra
(``make bench-queue`` installs it); ``--queues ours`` runs without it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg  # type: ignore[import-untyped]
from marketplace_common.db import create_engine
from marketplace_common.migrations import upgrade_async
from marketplace_common.pg_admin import asyncpg_dsn, throwaway_database
from marketplace_execution.domain.models import ExecutionStatus, NewExecution, Outcome
from marketplace_execution.domain.ports import Claimed, Lease
from marketplace_execution.migrations import MIGRATIONS_DIR
from marketplace_execution.storage.store import SqlExecutionStore

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL_ENV = "MARKETPLACE_BENCH_PG_URL"
QUEUES = ("ours", "procrastinate", "pgqueuer")
POOL_SIZE = 20
LEASE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Result:
    """One queue's figures."""

    queue: str
    jobs: int
    enqueue_seconds: float
    process_seconds: float
    enqueue_xacts: int
    process_xacts: int

    @property
    def enqueue_rate(self) -> float:
        return self.jobs / self.enqueue_seconds

    @property
    def process_rate(self) -> float:
        return self.jobs / self.process_seconds


async def _gather_limited(calls: Sequence[Callable[[], Awaitable[object]]], limit: int) -> float:
    """Runs ``calls`` with at most ``limit`` in flight; returns the wall time."""
    queue = list(reversed(calls))

    async def caller() -> None:
        while queue:
            await queue.pop()()

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(limit)))
    return time.perf_counter() - start


def _now() -> datetime:
    return datetime.now(UTC)


# --- ours ----------------------------------------------------------------------------


def _new_execution() -> NewExecution:
    return NewExecution(
        execution_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        request_id=uuid.uuid4(),
        request_fingerprint="0" * 64,
        prompt="noop",
        model="noop",
        output_schema=None,
        max_attempts=1,
        created_at=_now(),
    )


async def _work_ours(store: SqlExecutionStore, n: int, concurrency: int) -> None:
    """The worker pool's shape: claim the free slots, run each claimed job, repeat."""
    owner = f"bench:{uuid.uuid4().hex[:8]}"
    running: set[asyncio.Task[None]] = set()
    done = 0

    async def run(execution_id: uuid.UUID, lease: Lease) -> None:
        outcome = Outcome(ExecutionStatus.SUCCEEDED, result="ok")
        await store.decide(execution_id, lease, outcome, _now())
        await store.finish(execution_id, lease, _now())

    while done < n:
        free = concurrency - len(running)
        claimed = await store.claim(owner, free, _now(), LEASE_SECONDS) if free else Claimed()
        running.update(
            asyncio.create_task(run(i, Lease(owner, claimed.epochs[i]))) for i in claimed
        )
        if not running:
            await asyncio.sleep(0.01)  # nothing claimable yet: poll, as the pool does
        elif not claimed or len(running) >= concurrency:
            finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                task.result()
            running -= finished
            done += len(finished)
    await asyncio.gather(*running)


async def bench_ours(url: str, n: int, concurrency: int) -> Result:
    """The execution service's queue (see the module docstring)."""
    await upgrade_async(url, MIGRATIONS_DIR)
    xacts = [await _xacts(url)]
    engine = create_engine(url, pool_size=POOL_SIZE, max_overflow=0)
    try:
        store = SqlExecutionStore(engine)
        enqueue = await _gather_limited(
            [lambda: store.create(_new_execution()) for _ in range(n)], concurrency
        )
    finally:
        await engine.dispose()
    xacts.append(await _xacts(url))
    engine = create_engine(url, pool_size=POOL_SIZE, max_overflow=0)
    try:
        store = SqlExecutionStore(engine)
        start = time.perf_counter()
        await _work_ours(store, n, concurrency)
        process = time.perf_counter() - start
    finally:
        await engine.dispose()
    xacts.append(await _xacts(url))
    done = await _count(url, "SELECT count(*) FROM executions WHERE status = 'SUCCEEDED'")
    _check("ours", done, n)
    return Result("ours", n, enqueue, process, *_deltas(xacts))


# --- procrastinate -----------------------------------------------------------------------


async def bench_procrastinate(url: str, n: int, concurrency: int) -> Result:
    """procrastinate 3 on psycopg 3 (see the module docstring)."""
    import procrastinate

    connector = procrastinate.PsycopgConnector(
        conninfo=asyncpg_dsn(url), min_size=2, max_size=POOL_SIZE
    )
    app = procrastinate.App(connector=connector)
    ran: list[int] = []

    async def noop() -> None:
        ran.append(1)

    # The call form, not the decorator: without the extra, mypy sees an untyped one.
    task = app.task(name="noop")(noop)

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
    xacts = [await _xacts(url)]
    async with app.open_async():
        enqueue = await _gather_limited([task.defer_async for _ in range(n)], concurrency)
    xacts.append(await _xacts(url))
    async with app.open_async():
        start = time.perf_counter()
        await app.run_worker_async(
            concurrency=concurrency, wait=False, install_signal_handlers=False
        )
        process = time.perf_counter() - start
    xacts.append(await _xacts(url))
    done = await _count(url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
    _check("procrastinate", done, n)
    _check("procrastinate (calls)", len(ran), n)
    return Result("procrastinate", n, enqueue, process, *_deltas(xacts))


# --- PgQueuer ------------------------------------------------------------------------


async def bench_pgqueuer(url: str, n: int, concurrency: int) -> Result:
    """PgQueuer on an asyncpg pool (see the module docstring)."""
    from pgqueuer import AsyncpgPoolDriver, Job, Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode

    ran: list[int] = []
    async with asyncpg.create_pool(asyncpg_dsn(url), min_size=2, max_size=POOL_SIZE) as pool:
        await Queries(AsyncpgPoolDriver(pool)).install()
    xacts = [await _xacts(url)]
    async with asyncpg.create_pool(asyncpg_dsn(url), min_size=2, max_size=POOL_SIZE) as pool:
        queries = Queries(AsyncpgPoolDriver(pool))
        enqueue = await _gather_limited(
            [lambda: queries.enqueue("noop", None) for _ in range(n)], concurrency
        )
    xacts.append(await _xacts(url))
    async with asyncpg.create_pool(asyncpg_dsn(url), min_size=2, max_size=POOL_SIZE) as pool:
        manager = QueueManager(Queries(AsyncpgPoolDriver(pool)))

        async def noop(job: Job) -> None:
            ran.append(1)

        manager.entrypoint("noop")(noop)

        start = time.perf_counter()
        await manager.run(batch_size=concurrency, mode=QueueExecutionMode.drain)
        process = time.perf_counter() - start
    xacts.append(await _xacts(url))
    left = await _count(url, "SELECT count(*) FROM pgqueuer")
    logged = await _count(url, "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'")
    _check("pgqueuer (left in the queue)", left, 0)
    _check("pgqueuer (log)", logged, n)
    _check("pgqueuer (calls)", len(ran), n)
    return Result("pgqueuer", n, enqueue, process, *_deltas(xacts))


# --- the run -----------------------------------------------------------------------------


async def _xacts(url: str) -> int:
    """Committed transactions in the database so far, once the closed sessions' stats
    are in (a backend reports its counts when it exits, a moment after the close)."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    query = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    try:
        seen = -1
        for _ in range(50):
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            now = int(await conn.fetchval(query))
            if now == seen:
                return now
            seen = now
            await asyncio.sleep(0.2)
        return seen
    finally:
        await conn.close()


def _deltas(xacts: Sequence[int]) -> tuple[int, int]:
    # Each _xacts reading commits a few transactions of its own (about 3 before it
    # settles); that error is below one per thousand jobs and left in.
    return xacts[1] - xacts[0], xacts[2] - xacts[1]


async def _count(url: str, query: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()


def _check(what: str, got: int, expected: int) -> None:
    if got != expected:
        raise SystemExit(f"{what}: {got} jobs done, expected exactly {expected}")


BENCHES: dict[str, Callable[[str, int, int], Awaitable[Result]]] = {
    "ours": bench_ours,
    "procrastinate": bench_procrastinate,
    "pgqueuer": bench_pgqueuer,
}


def report(results: Sequence[Result], concurrency: int) -> str:
    """The side-by-side table, with each queue's processing rate over ours."""
    base = next((r for r in results if r.queue == "ours"), None)
    lines = [
        f"{results[0].jobs} no-op jobs, concurrency {concurrency}, one PostgreSQL server",
        f"{'queue':<14} {'enqueue jobs/s':>15} {'process jobs/s':>15} {'process / ours':>15}"
        f" {'xacts/job (enqueue, process)':>29}",
    ]
    for r in results:
        ratio = f"{r.process_rate / base.process_rate:.2f}x" if base else "-"
        per_job = f"{r.enqueue_xacts / r.jobs:.2f}, {r.process_xacts / r.jobs:.2f}"
        lines.append(
            f"{r.queue:<14} {r.enqueue_rate:>15.0f} {r.process_rate:>15.0f} {ratio:>15}"
            f" {per_job:>29}"
        )
    return "\n".join(lines)


async def amain(args: argparse.Namespace) -> list[Result]:
    results = []
    for name in args.queues:
        async with throwaway_database(args.pg_url, prefix="marketplace_qbench") as url:
            results.append(await BENCHES[name](url, args.jobs, args.concurrency))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per queue (default 5000)")
    parser.add_argument("--concurrency", type=int, default=16, help="jobs in flight (16)")
    parser.add_argument("--quick", action="store_true", help="200 jobs: a smoke run")
    parser.add_argument("--queues", nargs="+", choices=QUEUES, default=list(QUEUES))
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(PG_URL_ENV, DEFAULT_PG_URL),
        help=f"admin URL; each queue gets a database of its own there (env {PG_URL_ENV})",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs = 200
    results = asyncio.run(amain(args))
    print(report(results, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
