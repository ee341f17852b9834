"""Smoke test of bench/llm_limits_bench.py: both rows run end to end at a tiny size.

It checks the plumbing (a quantized fake provider, one and two replicas on a
throwaway PostgreSQL database, the report), not the target: that needs the
full size.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[3] / "bench"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_llm_limits_bench_runs_both_rows_at_a_tiny_size(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, postgres_server_url: str
) -> None:
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    import llm_limits_bench

    monkeypatch.setattr(llm_limits_bench, "configure_logging", lambda *a, **k: None)
    llm_limits_bench.main(["--rate", "10", "--executions", "10", "--pg-url", postgres_server_url])
    out = capsys.readouterr().out
    table = out[out.index("Provider-key limits") :].splitlines()
    rows = [line.split() for line in table if line.startswith("  ") and line.split()[0].isdigit()]
    assert [row[0] for row in rows] == ["1", "2"]
    assert all(row[5] == "0" for row in rows)  # every execution succeeded
    for name in ("llm_limits_bench", "execution_service_path"):
        sys.modules.pop(name, None)
