"""Provider-key limits benchmark: executions per second against a key limited to R a second.

A fake OpenAI-compatible server (``tests/support/fake_openai.py``) enforces a
*quantized* limit, as providers do: at most R accepted requests in any 1 s
(429 with ``retry-after-ms`` beyond). The execution service runs with
``EXECUTION_PACING_REQUESTS_PER_MINUTE = 60 * R`` on a throwaway PostgreSQL
database, first as one replica, then as two replicas sharing the database (two
servers in this process, each with its own engine, worker pool and provider
client: they share nothing but the database). N executions are submitted at
once; the wall time runs from the first submit to the last execution
terminal.

Reported per row: executions per second as a ratio of R (target >= 0.9: the
limiter keeps calls 5 % under the limit by default, ``EXECUTION_PACING_MARGIN``,
so about 0.95 is the ceiling), the 429s the provider sent, the executions
that did not succeed, and the provider-side ratio (accepted calls per second
between the first and the last accepted call, as a ratio of R: the limiter's
own pace, without the service's start and finish). Exits non-zero when a row misses the target or an
execution failed.

Run: ``.venv/bin/python bench/llm_limits_bench.py [--rate R] [--executions N]
[--pg-url URL]`` (or ``make bench-llm-limits``; part of ``make bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from execution_service_path import BenchBidService
from marketplace.bids.v1 import bids_pb2_grpc
from marketplace.execution.v1 import execution_pb2, execution_pb2_grpc
from marketplace_common.logging import configure_logging
from marketplace_common.migrations import upgrade_async
from marketplace_common.pg_admin import throwaway_database
from marketplace_execution.migrations import MIGRATIONS_DIR
from marketplace_execution.server import ExecutionServer, create_server
from marketplace_execution.settings import ExecutionSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
from fake_openai import FakeOpenAIServer

TARGET = 0.9
PG_URL_ENV = "MARKETPLACE_BENCH_PG_URL"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_TERMINAL = {
    execution_pb2.EXECUTION_STATUS_SUCCEEDED,
    execution_pb2.EXECUTION_STATUS_FAILED,
    execution_pb2.EXECUTION_STATUS_CANCELLED,
}


@dataclass(frozen=True)
class Row:
    replicas: int
    rate: int
    executions: int
    wall: float
    rejected: int
    not_succeeded: int
    provider_span: float

    @property
    def ratio(self) -> float:
        return self.executions / self.wall / self.rate

    @property
    def provider_ratio(self) -> float:
        """Accepted calls per second between the first and the last, as a ratio of R."""
        return (self.executions - 1) / self.provider_span / self.rate if self.provider_span else 0

    @property
    def ok(self) -> bool:
        return self.ratio >= TARGET and self.not_succeeded == 0


def _settings(
    url: str, bids: str, fake: FakeOpenAIServer, rate: int, n: int, margin: float
) -> ExecutionSettings:
    return ExecutionSettings(
        grpc_port=0,
        metrics_port=0,
        database_url=url,
        bids_target=bids,
        workers=n,
        lease_seconds=30.0,
        heartbeat_seconds=2.0,
        poll_seconds=0.1,
        log_level="ERROR",
        llm_provider="openai",
        llm_base_url=fake.base_url,
        llm_model="bench-model",
        llm_api_key="sk-bench-not-a-real-key",
        llm_backoff_max_seconds=30.0,
        pacing_requests_per_minute=rate * 60,
        pacing_margin=margin,
        pacing_jitter=0.0,
    )


async def _run(url: str, rate: int, n: int, replicas: int, margin: float) -> Row:
    fake = FakeOpenAIServer(rate_limit=(rate, 1.0))
    fake.start()
    bids_server = grpc.aio.server()
    bids_pb2_grpc.add_BidServiceServicer_to_server(BenchBidService(), bids_server)  # type: ignore[abstract]
    bids = f"127.0.0.1:{bids_server.add_insecure_port('127.0.0.1:0')}"
    await bids_server.start()
    servers: list[ExecutionServer] = []
    channels: list[grpc.aio.Channel] = []
    try:
        for _ in range(replicas):
            server, port = await create_server(_settings(url, bids, fake, rate, n, margin))
            servers.append(server)
            channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
        stubs = [execution_pb2_grpc.ExecutionServiceStub(c) for c in channels]
        started = time.perf_counter()
        gate = asyncio.Semaphore(20)

        async def submit(i: int) -> Any:
            request = execution_pb2.SubmitExecutionRequest(
                request_id=str(uuid.uuid4()), task_id=str(uuid.uuid4())
            )
            async with gate:
                return await stubs[i % replicas].SubmitExecution(request, timeout=60)

        submitted = await asyncio.gather(*(submit(i) for i in range(n)))
        ids = [s.execution.execution_id for s in submitted]
        finals = await _wait_terminal(stubs[0], ids)
        wall = time.perf_counter() - started
        failed = sum(1 for f in finals if f.status != execution_pb2.EXECUTION_STATUS_SUCCEEDED)
        accepted = [r.at for r, status in fake.answered if status == 200]
        span = max(accepted) - min(accepted) if accepted else 0.0
        return Row(replicas, rate, n, wall, fake.statuses().count(429), failed, span)
    finally:
        for channel in channels:
            await channel.close(None)
        for server in servers:
            await server.stop(1.0)
        await bids_server.stop(0)
        fake.stop()


async def _wait_terminal(stub: execution_pb2_grpc.ExecutionServiceStub, ids: list[str]) -> list:  # type: ignore[type-arg]
    pending = set(ids)
    finals = []
    while pending:
        for execution_id in list(pending):
            request = execution_pb2.GetExecutionRequest(execution_id=execution_id)
            got = await stub.GetExecution(request, timeout=10)  # type: ignore[misc]
            if got.execution.status in _TERMINAL:
                pending.discard(execution_id)
                finals.append(got.execution)
        if pending:
            await asyncio.sleep(0.1)
    return finals


async def amain(args: argparse.Namespace) -> int:
    configure_logging("ERROR")
    rows = []
    for replicas in args.replicas:
        async with throwaway_database(args.pg_url, prefix="marketplace_llm_bench") as url:
            await upgrade_async(url, MIGRATIONS_DIR)
            rows.append(await _run(url, args.rate, args.executions, replicas, args.margin))
    print(f"\nProvider-key limits: {args.executions} executions, a key limited to "
          f"{args.rate} requests in any 1 s (quantized), PostgreSQL, "
          f"EXECUTION_PACING_MARGIN={args.margin}")  # fmt: skip
    print(f"  {'replicas':>8}  {'wall s':>7}  {'exec/s':>7}  {'ratio of R':>10}  "
          f"{'429s':>5}  {'failed':>6}  {'provider-side':>13}  target >= {TARGET}")  # fmt: skip
    for row in rows:
        verdict = "yes" if row.ok else "NO"
        rate = row.executions / row.wall
        print(f"  {row.replicas:>8}  {row.wall:>7.1f}  {rate:>7.2f}  {row.ratio:>10.2f}  "
              f"{row.rejected:>5}  {row.not_succeeded:>6}  {row.provider_ratio:>13.2f}  "
              f"{verdict}")  # fmt: skip
    print(
        "  ratio of R: executions / wall time (first submit to last execution terminal) / R;"
        "\n  provider-side: accepted calls / (last - first accepted call) / R."
    )
    return 0 if all(row.ok for row in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=int, default=5, help="R: requests in any 1 s (5)")
    parser.add_argument("--executions", type=int, default=100, help="N (100)")
    parser.add_argument(
        "--margin", type=float, default=0.05, help="EXECUTION_PACING_MARGIN (0.05, the default)"
    )
    parser.add_argument(
        "--replicas", type=int, nargs="+", default=[1, 2], help="replica counts (1 2)"
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(PG_URL_ENV, DEFAULT_PG_URL),
        help=f"admin URL; each row creates and drops its own database there (env {PG_URL_ENV})",
    )
    return asyncio.run(amain(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
