"""Smoke test of bench/execution_bench.py: every measurement runs end to end at tiny sizes.

It checks the plumbing (the attempt loop at scale, the execution path with a
worker pool, SQLite and an in-process fake BidService over gRPC, smart vs blind
retry and its sweep of fault mixes), not the targets: those need the full sizes.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[3] / "bench"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


async def test_execution_bench_runs_every_measurement_at_a_tiny_size(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    import execution_bench

    # The bench silences logging process-wide; leave the session's logging alone.
    monkeypatch.setattr(execution_bench, "configure_logging", lambda *a, **k: None)
    plot = tmp_path / "sweep.png"
    args = ["--runs", "20", "--delay", "0.2", "--requests", "40", "--plot", str(plot)]
    await execution_bench.main(args)
    out = capsys.readouterr().out
    assert "b) execution path, fake BidService" in out
    assert "in-process fake BidService over gRPC (not the bids service)" in out
    succeeded = next(line for line in out.splitlines() if line.strip().startswith("succeeded"))
    assert succeeded.split()[1:] == ["20", "20"]
    assert "calls per success saved" in out
    assert "raw provider calls saved" in out

    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if "blind calls" in line)
    rows = [line.split() for line in lines[head + 1 : head + 5]]
    assert [row[0] for row in rows] == ["0%", "10%", "25%", "50%"]
    for _, blind_calls, blind_ok, smart_calls, smart_ok, *_ in rows:
        # Every request is tried at least once and at most MAX_ATTEMPTS (4) times
        # (a re-ask of a malformed answer is one of those attempts).
        assert 40 <= int(blind_calls) <= 160
        assert 40 <= int(smart_calls) <= 160
        assert 0 <= int(blind_ok) <= 40
        assert 0 <= int(smart_ok) <= 40

    if importlib.util.find_spec("matplotlib") is not None:
        assert f"plot written: {plot}" in out
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "plot skipped: matplotlib is not installed" in out
        assert not plot.exists()
    for name in ("execution_bench", "execution_service_path", "execution_retry"):
        sys.modules.pop(name, None)
