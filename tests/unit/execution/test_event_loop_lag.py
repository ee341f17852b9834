"""Nothing in a run of many paced calls blocks the event loop (a behaviour check)."""

from __future__ import annotations

import asyncio
import json
import time

from marketplace_common.retrying import RetryPolicy
from marketplace_execution.domain.attempt_loop import AttemptRunner
from marketplace_execution.domain.pacing import Pacer, PacingConfig
from marketplace_execution.domain.ports import JobSpec
from marketplace_execution.llm.offline import OfflineFaults, OfflineProvider

PROBE_INTERVAL = 0.005


async def _probe(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(PROBE_INTERVAL)
        lags.append(time.perf_counter() - before - PROBE_INTERVAL)


async def test_two_hundred_paced_calls_keep_event_loop_lag_small() -> None:
    faults = OfflineFaults(transient=0.2, rate_limited=0.05, malformed=0.1, retry_after=0.05)
    runner = AttemptRunner(
        OfflineProvider(faults),
        Pacer(PacingConfig(delay=0.3, jitter=0.5, max_concurrency=50)),
        RetryPolicy(base_delay=0.05, max_delay=0.2),
    )
    schema = json.dumps(
        {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    )
    lags: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(lags, stop))

    outcomes = await asyncio.gather(
        *(runner.run(JobSpec(f"job {i}", "", schema, 4)) for i in range(200))
    )
    stop.set()
    await probe

    assert sum(o.succeeded for o in outcomes) > 150
    assert len(lags) > 20
    # A blocking pacing pause (time.sleep(0.3)) would show a lag of 300 ms or more;
    # the bounds leave room for a busy machine's scheduling noise, not for that.
    p95 = sorted(lags)[int(len(lags) * 0.95)]
    assert p95 < 0.05, f"p95 event-loop lag {p95 * 1000:.1f} ms"
    assert max(lags) < 0.25, f"max event-loop lag {max(lags) * 1000:.1f} ms"
