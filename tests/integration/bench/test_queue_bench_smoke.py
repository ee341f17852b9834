"""Smoke test of bench/queue_compare.py: the execution queue's side runs end to end.

procrastinate and PgQueuer are an optional extra (``make bench-queue``), so
only the hand-made queue is measured here: enqueue, claim, decide and finish
through the real store on PostgreSQL, every job exactly once.
"""

from __future__ import annotations

import math

import pytest
import queue_compare as bench  # bench/ is on the tests' pythonpath

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


async def test_the_execution_queue_processes_every_job_exactly_once(pg_url: str) -> None:
    result = await bench.bench_ours(pg_url, 40, 4)

    assert result.queue == "ours"
    assert result.jobs == 40
    assert 0 < result.process_rate < math.inf
    assert 0 < result.enqueue_rate < math.inf
    # create commits one transaction per job; decide and finish of the jobs in flight
    # (4) share transactions, so at least 2 * 40 / 4 of them, and the claims (several
    # jobs per claim) at least one more
    assert result.enqueue_xacts >= 40
    assert result.process_xacts >= 2 * 40 // 4 + 1
    table = bench.report([result], 4)
    assert "40 no-op jobs, concurrency 4" in table
    row = table.splitlines()[-1].split()
    assert row[0] == "ours"
    assert row[3] == "1.00x"


def test_a_job_done_twice_or_lost_fails_the_run() -> None:
    with pytest.raises(SystemExit, match="41 jobs done, expected exactly 40"):
        bench._check("ours", 41, 40)
