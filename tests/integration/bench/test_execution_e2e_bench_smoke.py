"""Smoke test of bench/execution_e2e_bench.py: both rows at a tiny size.

It checks the plumbing (the bids service and execution replicas as processes
on throwaway PostgreSQL databases, tasks made through the bids API, the
exactly-once check from the bids side, the lag probes), not the targets: those
need the full size.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[3] / "bench"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_execution_e2e_bench_runs_both_rows_at_a_tiny_size(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, postgres_server_url: str
) -> None:
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    import execution_e2e_bench

    argv = ["--executions", "12", "--paced", "10", "--delay", "0.5", "--workers", "4"]
    execution_e2e_bench.main([*argv, "--pg-url", postgres_server_url])
    out = capsys.readouterr().out
    once = re.findall(r"completed exactly once \(bids side\): (\d+)/(\d+) .* (yes|NO)$", out, re.M)
    assert once == [("12", "12", "yes"), ("10", "10", "yes")], out
    assert "executions/s" in out
    assert "x the delay" in out
    lags = re.findall(r"^   (bids|replica-\d+) +event-loop lag p99 +([\d.]+) ms", out, re.M)
    assert [name for name, _ in lags].count("bids") == 2, out
    assert len(lags) == 6, out  # the bids service and two replicas, per row
    for name in ("execution_e2e_bench", "e2ebench", "e2ebench.bids_side", "e2ebench.processes"):
        sys.modules.pop(name, None)
