"""Benchmark 2 of execution_bench.py: smart retry against blind retry, over fault mixes.

The same requests and the same seeded faults go through AttemptRunner (the
smart retry of docs/errors.md) and through a loop that retries every error up
to the same max attempts. Each strategy's raw provider calls and successes are
reported side by side for one mix (the target row) and over a sweep of the
permanent share (0 %, 10 %, 25 %, 50 %) with the other rates fixed, as a table
and, when matplotlib is importable (the ``bench`` extra), as a PNG plot.

Fault model (OfflineProvider): transient and rate-limited faults are drawn
per call; a permanent fault sticks to its request (the same call fails
again); a malformed answer sticks to its conversation (a temperature-0 model
repeats itself; a re-ask with the validation errors is a new conversation).
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from pathlib import Path

from marketplace_common.retrying import RetryPolicy, backoff_delay
from marketplace_execution.domain.attempt_loop import AttemptRunner
from marketplace_execution.domain.llm import LLMRequest
from marketplace_execution.domain.output_validation import compile_schema, validate_output
from marketplace_execution.domain.pacing import Pacer
from marketplace_execution.domain.ports import JobSpec
from marketplace_execution.llm.offline import OfflineFaults, OfflineProvider
from marketplace_execution.metrics import PrometheusExecutionMetrics
from prometheus_client import CollectorRegistry

SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}, "hours": {"type": "integer", "minimum": 1}},
    "required": ["summary", "hours"],
}
MAX_ATTEMPTS = 4
TRANSIENT, RATE_LIMITED, MALFORMED = 0.10, 0.05, 0.15
SWEEP_SHARES = (0.0, 0.10, 0.25, 0.50)


class InstantClock:
    """Virtual time: sleeps are added up, not waited (only call counts matter here)."""

    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


@dataclass(frozen=True)
class RetryResult:
    calls: int
    succeeded: int
    waited: float

    @property
    def calls_per_success(self) -> float:
        return self.calls / self.succeeded if self.succeeded else float("inf")


@dataclass(frozen=True)
class SweepRow:
    permanent: float
    blind: RetryResult
    smart: RetryResult

    @property
    def raw_saved(self) -> float:
        return 1.0 - self.smart.calls / self.blind.calls

    @property
    def per_success_saved(self) -> float:
        return saving(self.smart, self.blind)


def _requests(count: int) -> list[LLMRequest]:
    return [
        LLMRequest.from_prompt(f"Estimate job {i}: fix the login page", output_schema=SCHEMA)
        for i in range(count)
    ]


def _policy() -> RetryPolicy:
    return RetryPolicy(max_attempts=MAX_ATTEMPTS, max_llm_fixable_attempts=3, deadline=None)


async def run_smart(faults: OfflineFaults, count: int) -> RetryResult:
    provider, clock = OfflineProvider(faults), InstantClock()
    runner = AttemptRunner(
        provider,
        Pacer(clock=clock),
        _policy(),
        clock=clock,
        rng=random.Random(7),
        metrics=PrometheusExecutionMetrics(CollectorRegistry()),
    )
    succeeded = 0
    for request in _requests(count):
        job = JobSpec(request.last_user_message, "", json.dumps(SCHEMA), MAX_ATTEMPTS)
        succeeded += (await runner.run(job)).succeeded
    return RetryResult(provider.calls, succeeded, clock.t)


async def run_blind(faults: OfflineFaults, count: int) -> RetryResult:
    """Retry every error, valid or not, up to MAX_ATTEMPTS, with the same backoff."""
    provider, clock = OfflineProvider(faults), InstantClock()
    rng, policy = random.Random(7), _policy()
    validator = compile_schema(SCHEMA)
    succeeded = 0
    for request in _requests(count):
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                response = await provider.complete_async(request)
                validate_output(response.text, validator)
            except Exception:
                if attempt < MAX_ATTEMPTS:
                    await clock.sleep(backoff_delay(attempt, policy, rng))
                continue
            succeeded += 1
            break
    return RetryResult(provider.calls, succeeded, clock.t)


def fault_mix(permanent: float) -> OfflineFaults:
    return OfflineFaults(
        transient=TRANSIENT, rate_limited=RATE_LIMITED, permanent=permanent,
        malformed=MALFORMED, retry_after=1.0, seed=2026,
    )  # fmt: skip


def saving(smart: RetryResult, blind: RetryResult) -> float:
    return 1.0 - smart.calls_per_success / blind.calls_per_success


async def sweep(count: int, shares: tuple[float, ...] = SWEEP_SHARES) -> list[SweepRow]:
    rows = []
    for share in shares:
        blind = await run_blind(fault_mix(share), count)
        smart = await run_smart(fault_mix(share), count)
        rows.append(SweepRow(share, blind, smart))
    return rows


def print_sweep(rows: list[SweepRow], count: int) -> None:
    print(
        f"\n   sweep of the permanent share on {count} requests (transient {TRANSIENT:.0%}, "
        f"rate-limited {RATE_LIMITED:.0%}, malformed {MALFORMED:.0%} fixed), as measured:"
    )
    head = f"{'permanent':>11}{'blind calls':>13}{'blind ok':>10}{'smart calls':>13}"
    print(f"   {head}{'smart ok':>10}{'calls saved':>13}{'per success saved':>19}")
    for row in rows:
        print(
            f"   {row.permanent:>11.0%}{row.blind.calls:>13}{row.blind.succeeded:>10}"
            f"{row.smart.calls:>13}{row.smart.succeeded:>10}{row.raw_saved:>13.1%}"
            f"{row.per_success_saved:>19.1%}"
        )


def plot_sweep(rows: list[SweepRow], count: int, path: Path) -> bool:
    """Writes the sweep as a PNG; False (and nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    shares = [row.permanent * 100 for row in rows]
    fig, (calls_ax, ok_ax) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for label, results, style in (
        ("blind retry", [r.blind for r in rows], "o--"),
        ("smart retry", [r.smart for r in rows], "s-"),
    ):
        calls_ax.plot(shares, [r.calls for r in results], style, label=label)
        ok_ax.plot(shares, [r.succeeded for r in results], style, label=label)
    calls_ax.set_title("raw provider calls")
    ok_ax.set_title("successes")
    for ax in (calls_ax, ok_ax):
        ax.set_xlabel("permanent share of requests (%)")
        ax.set_xticks(shares)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(
        f"Smart vs blind retry, {count} requests, max_attempts {MAX_ATTEMPTS} "
        f"(transient {TRANSIENT:.0%}, rate-limited {RATE_LIMITED:.0%}, "
        f"malformed {MALFORMED:.0%})"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
