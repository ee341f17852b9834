"""Smoke test of bench/execution_bench.py: every measurement runs end to end at tiny sizes.

It checks the plumbing (the attempt loop at scale, the real execution path with
a worker pool, SQLite and a fake BidService over gRPC, smart vs blind retry),
not the targets: those need the full sizes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[3] / "bench"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


async def test_execution_bench_runs_every_measurement_at_a_tiny_size(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    import execution_bench

    # The bench silences logging process-wide; leave the session's logging alone.
    monkeypatch.setattr(execution_bench, "configure_logging", lambda *a, **k: None)
    await execution_bench.main(["--runs", "20", "--delay", "0.2", "--requests", "40"])
    out = capsys.readouterr().out
    assert "b) execution path" in out
    assert "succeeded                 " in out
    succeeded = next(line for line in out.splitlines() if line.strip().startswith("succeeded"))
    assert succeeded.split()[1:] == ["20", "20"]
    assert "calls per success saved" in out
    assert "raw provider calls saved" in out
    sys.modules.pop("execution_bench", None)
    sys.modules.pop("execution_service_path", None)
