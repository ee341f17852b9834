"""Smoke test of bench/bids_bench.py: every measurement runs end to end at tiny sizes.

It checks the plumbing (two service subprocesses, raw asyncpg withdrawals,
the COPY load, index and seq-scan timings, the deep page token, the table),
not the targets: those need the full sizes and a quiet machine.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH_FILE = Path(__file__).resolve().parents[3] / "bench" / "bids_bench.py"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bids_bench", BENCH_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module while being built
    spec.loader.exec_module(module)
    return module


async def test_bids_bench_runs_every_measurement_at_tiny_sizes(
    bench: ModuleType, pg_url: str
) -> None:
    tiny = bench.Sizes(
        "tiny", full=False, concurrency=8, withdraw_ops=24, withdraw_rounds=2, warmup_ops=8,
        path_ops=16, path_rounds=3,
        tasks=3_000, clients=30, deep_tasks=600, deep_page=10, page_size=50,
        index_samples=10, seq_samples=2, page_samples=3,
    )  # fmt: skip

    report = await bench.run_benchmarks(pg_url, tiny, bench.ServiceOptions(log_level="WARNING"))

    names = [result.name for result in report.results]
    assert len(names) == 9
    path_rpcs = ["GetBid", "ListBids", "PlaceBid", "WithdrawBid"]
    assert [name.split(",")[0] for name in names[:4]] == path_rpcs
    assert all("vs bare grpc.aio+asyncpg server" in name for name in names[:4])
    assert all("p99" in r.measured and "loop lag p99" in r.measured for r in report.results[:4])
    assert names[4].startswith("WithdrawBid, 2 instances vs raw asyncpg")
    assert "forced seq scan / index" in names[5]
    assert "EXPLAIN" in names[6]
    assert all("Keyset page 10 / page 1" in name for name in names[7:])
    ratios = [r.ratio for r in report.results if r.ratio is not None]
    assert len(ratios) == 8
    assert all(math.isfinite(ratio) and ratio > 0 for ratio in ratios)
    assert [r.enforced for r in report.results] == [True] * 5 + [False] * 4
    assert "forced: Seq Scan" in report.results[6].measured  # the plan at tiny sizes may vary
    assert any(note.startswith("loaded 3,000 tasks") for note in report.notes)
    table = bench.format_report(report, 1.0)
    assert all(name in table for name in names)
    assert "total run time: 1.0 s" in table
