"""Smoke test of bench/workers_bench.py: both rows run end to end at tiny sizes.

It checks the plumbing (the real console script with --workers 2 and 1, the
client's separate connections, the interleaved rounds, CPU and the split of
calls over the processes), not the ratio: that needs a quiet machine.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH_FILE = Path(__file__).resolve().parents[3] / "bench" / "workers_bench.py"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("workers_bench", BENCH_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module while being built
    spec.loader.exec_module(module)
    return module


async def test_workers_bench_runs_both_rows_at_tiny_sizes(bench: ModuleType, pg_url: str) -> None:
    tiny = bench.Sizes("tiny", concurrency=8, channels=6, warmup_ops=12, ops=24, rounds=2)

    rows = await bench.run(pg_url, tiny)

    assert [row.rpc for row in rows] == ["GetBid", "PlaceBid"]
    assert all(math.isfinite(row.ratio) and row.ratio > 0 for row in rows)
    for row in rows:
        assert "2 workers" in row.measured
        assert "1 worker" in row.measured
        assert "ms/call" in row.measured
        assert "split" in row.measured
    table = bench.format_rows(rows, tiny, ("0", "0"), 1.0)
    assert "GetBid: 2 workers / 1 worker = " in table
