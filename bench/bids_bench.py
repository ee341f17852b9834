"""Bids service benchmark on PostgreSQL: three side-by-side ratios in one run.

Run: ``.venv/bin/python bench/bids_bench.py [--quick] [--pg-url URL]`` (or
``make bench-bids``). ``--pg-url`` / ``MARKETPLACE_BENCH_PG_URL`` is an admin
URL (default ``postgresql://postgres@127.0.0.1:5432/postgres``); the run
creates a throwaway database ``marketplace_bench_<random>`` there, migrates it
with the service's own Alembic migrations, and drops it at the end. Prints a
table; exits 1 when an enforced target is missed. Only ratios measured side by
side in one run count (the machine is small and noisy), so every row compares
two things timed interleaved, and reports medians.

0. The request path: GetBid, ListBids (a page of 50), PlaceBid and WithdrawBid
   through one service instance on its shipped defaults (auth on, INFO logs)
   against the bare server (``bidsbench.bare``: a grpc.aio servicer on uvloop
   running the service's own statements over an asyncpg pool, nothing else),
   same client, 32 in flight, interleaved rounds; rate, p50 and p99 of each
   side and each server's event-loop lag p99 (targets: service/bare >= 0.7,
   p99 at most 1.5x the bare server's).
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

This file is the entry point (and what each instance subprocess runs); the
measurements live in the ``bidsbench`` package next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Sequence

from bidsbench.common import FULL, QUICK, Sizes, progress
from bidsbench.instances import ServiceOptions, serve_bare, serve_instance, service_instances
from bidsbench.keyset import bench_deep_page
from bidsbench.listing import bench_index_vs_seq
from bidsbench.loading import load_tasks
from bidsbench.report import Report, failed, format_report
from bidsbench.request_path import bench_request_path
from bidsbench.withdraw import bench_withdraw
from marketplace_bids.migrations import SCRIPT_LOCATION
from marketplace_common import runtime
from marketplace_common.migrations import upgrade_async
from marketplace_common.pg_admin import asyncpg_dsn, throwaway_database

__all__ = ["ServiceOptions", "Sizes", "format_report", "main", "run_benchmarks"]

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL_ENV = "MARKETPLACE_BENCH_PG_URL"


SECTIONS = ("request-path", "withdraw", "listing")


async def run_benchmarks(
    url: str,
    sizes: Sizes,
    options: ServiceOptions | None = None,
    sections: Sequence[str] = SECTIONS,
) -> Report:
    """Every measurement on the (empty) database at ``url``, which is migrated first."""
    report = Report(sizes)
    progress("migrating the bench database (the service's Alembic migrations)")
    await upgrade_async(url, SCRIPT_LOCATION)
    dsn = asyncpg_dsn(url)
    options = options or ServiceOptions()
    if "request-path" in sections:
        async with (
            service_instances(url, 1, options) as (service,),
            service_instances(url, 1, options, bare=True) as (bare,),
        ):
            report.notes.append(
                f"request path: 1 bids instance (subprocess, auth on, {options.describe()}) "
                f"against the bare server (subprocess, same pool size); machine: "
                f"{os.cpu_count()} CPUs"
            )
            report.results += await bench_request_path(dsn, service, bare, sizes)
    if {"withdraw", "listing"} & set(sections):
        await _instance_pair_sections(url, dsn, sizes, options, sections, report)
    return report


async def _instance_pair_sections(
    url: str,
    dsn: str,
    sizes: Sizes,
    options: ServiceOptions,
    sections: Sequence[str],
    report: Report,
) -> None:
    async with service_instances(url, 2, options) as instances:
        report.notes.append(
            f"bids service: 2 subprocess instances (create_server, port 0), auth on, "
            f"{options.describe()}; machine: {os.cpu_count()} CPUs"
        )
        if "withdraw" in sections:
            report.results.append(await bench_withdraw(dsn, instances, sizes))
        if "listing" not in sections:
            return
        progress(f"loading {sizes.tasks:,} tasks with COPY")
        loaded = await load_tasks(dsn, sizes)
        report.notes.append(loaded.note)
        progress("ListTasks: index vs forced sequential scan")
        report.results += await bench_index_vs_seq(dsn, sizes, loaded)
        progress(f"ListTasks: keyset page {sizes.deep_page} vs page 1")
        report.results += await bench_deep_page(dsn, sizes, loaded.heavy, instances[0].port)


def service_options(args: argparse.Namespace) -> ServiceOptions:
    return ServiceOptions(args.service_log_level, args.service_pool_size)


async def amain(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    this = asyncio.current_task()
    if this is not None:  # SIGTERM unwinds like Ctrl-C: instances stopped, database dropped
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this.cancel)
    sizes = QUICK if args.quick else FULL
    async with throwaway_database(args.pg_url, prefix="marketplace_bench") as url:
        report = await run_benchmarks(url, sizes, service_options(args), args.only or SECTIONS)
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
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only this section (repeatable)"
    )
    parser.add_argument("--serve-instance", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare:
        return runtime.run(serve_bare(args.serve_bare, service_options(args)))
    if args.serve_instance:
        return runtime.run(serve_instance(args.serve_instance, service_options(args)))
    try:
        return runtime.run(amain(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: the instances were stopped and the database dropped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
