"""Execution service benchmark: the LLM attempt loop on one process.

1. Pacing at scale: 1,000 concurrent runs through AttemptRunner with the
   offline provider and a 1 s (+/-10 %) pacing delay each. Reports wall time
   as a ratio of the nominal delay (target <= 1.5; 1.0 is the floor), the
   event-loop lag (a probe task sleeping 10 ms: p99 and max) and peak RSS.
2. Smart retry vs blind retry on one seeded fault mix: the same requests,
   the same faults, through AttemptRunner (errors.md's smart retry) and
   through a loop that retries every error up to the same max attempts.
   Reports provider calls and successes side by side; target: at least 40 %
   fewer calls per success (calls for the same successes).

Fault model (OfflineProvider): transient and rate-limited faults are drawn
per call; a permanent fault sticks to its request (the same call fails
again); a malformed answer sticks to its conversation (a temperature-0 model
repeats itself; a re-ask with the validation errors is a new conversation).
A sensitivity table shows how the saving depends on the share of permanent
errors. Exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import sys
import time
from dataclasses import dataclass

from marketplace_common.logging import configure_logging
from marketplace_common.retry import RetryPolicy, backoff_delay
from marketplace_execution.domain.attempt_loop import AttemptRunner, LLMAttempt
from marketplace_execution.domain.llm_metrics import LLMMetrics
from marketplace_execution.domain.output_validation import compile_schema, validate_output
from marketplace_execution.domain.pacing import Pacer, PacingConfig
from marketplace_execution.llm.base import LLMRequest
from marketplace_execution.llm.offline import OfflineFaults, OfflineProvider
from prometheus_client import CollectorRegistry

SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}, "hours": {"type": "integer", "minimum": 1}},
    "required": ["summary", "hours"],
}
RATIO_TARGET = 1.5
LAG_P99_TARGET = 0.050
SAVING_TARGET = 0.40
MAX_ATTEMPTS = 4


# --- 1. pacing at scale -------------------------------------------------------


@dataclass(frozen=True)
class PacingResult:
    runs: int
    delay: float
    wall: float
    lag_p99: float
    lag_max: float
    peak_rss_mb: float
    succeeded: int

    @property
    def ratio(self) -> float:
        return self.wall / self.delay


async def _lag_probe(lags: list[float], stop: asyncio.Event, interval: float = 0.01) -> None:
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(interval)
        lags.append(max(0.0, time.perf_counter() - before - interval))


async def bench_pacing(runs: int, delay: float) -> PacingResult:
    runner = AttemptRunner(
        OfflineProvider(),
        Pacer(PacingConfig(delay=delay, jitter=0.1), rng=random.Random(1)),
        RetryPolicy(),
        metrics=LLMMetrics(CollectorRegistry()),
    )
    stored: list[LLMAttempt] = []

    async def store(attempt: LLMAttempt) -> None:  # stands in for the durable write
        stored.append(attempt)

    lags: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(_lag_probe(lags, stop))
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    outcomes = await asyncio.gather(
        *(
            runner.run(LLMRequest.from_prompt(f"job {i}", output_schema=SCHEMA), on_attempt=store)
            for i in range(runs)
        )
    )
    wall = time.perf_counter() - started
    stop.set()
    await probe
    lags.sort()
    return PacingResult(
        runs=runs,
        delay=delay,
        wall=wall,
        lag_p99=lags[int(len(lags) * 0.99) - 1],
        lag_max=lags[-1],
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        succeeded=sum(o.succeeded for o in outcomes),
    )


# --- 2. smart vs blind retry -------------------------------------------------------


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
        metrics=LLMMetrics(CollectorRegistry()),
    )
    succeeded = 0
    for request in _requests(count):
        succeeded += (await runner.run(request)).succeeded
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


def _mix(permanent: float) -> OfflineFaults:
    return OfflineFaults(
        transient=0.10, rate_limited=0.05, permanent=permanent, malformed=0.15, retry_after=1.0,
        seed=2026,
    )  # fmt: skip


def saving(smart: RetryResult, blind: RetryResult) -> float:
    return 1.0 - smart.calls_per_success / blind.calls_per_success


# --- report -------------------------------------------------------------------


def _print_pacing(result: PacingResult) -> bool:
    ok_ratio = result.ratio <= RATIO_TARGET
    ok_lag = result.lag_p99 <= LAG_P99_TARGET
    print(f"1) {result.runs} concurrent runs, pacing delay {result.delay:.1f} s (+/-10 %), offline")
    print(f"   {'metric':<28}{'value':>12}{'target':>12}  ok")
    print(f"   {'wall time / delay':<28}{result.ratio:>12.3f}{'<= 1.5':>12}  {_ok(ok_ratio)}")
    print(f"   {'wall time (s)':<28}{result.wall:>12.3f}")
    lag_p99 = f"{result.lag_p99 * 1000:.1f}"
    print(f"   {'event-loop lag p99 (ms)':<28}{lag_p99:>12}{'<= 50':>12}  {_ok(ok_lag)}")
    print(f"   {'event-loop lag max (ms)':<28}{result.lag_max * 1000:>12.1f}")
    print(f"   {'peak RSS (MB)':<28}{result.peak_rss_mb:>12.1f}")
    print(f"   {'succeeded':<28}{result.succeeded:>12}")
    return ok_ratio and ok_lag


def _print_retry(smart: RetryResult, blind: RetryResult, count: int) -> bool:
    gain = saving(smart, blind)
    ok = gain >= SAVING_TARGET and smart.succeeded >= blind.succeeded
    print(
        f"\n2) fault mix on {count} requests: transient 10 %, rate-limited 5 % (per call), "
        f"permanent 15 % (per request), malformed 15 % (per conversation); "
        f"max_attempts {MAX_ATTEMPTS}"
    )
    print(f"   {'':<24}{'calls':>8}{'successes':>11}{'calls/success':>15}{'waited (s)':>12}")
    for name, r in (("blind retry", blind), ("smart retry", smart)):
        print(
            f"   {name:<24}{r.calls:>8}{r.succeeded:>11}{r.calls_per_success:>15.3f}"
            f"{r.waited:>12.1f}"
        )
    raw = 1.0 - smart.calls / blind.calls
    print(f"   calls saved, raw: {raw:.1%}; per success: {gain:.1%} (target >= 40 %)  {_ok(ok)}")
    return ok


async def _sensitivity(count: int) -> None:
    print("\n   sensitivity to the permanent share (other rates as above):")
    print(f"   {'permanent':>11}{'blind calls/success':>22}{'smart calls/success':>22}{'saved':>9}")
    for share in (0.0, 0.05, 0.15, 0.25):
        smart = await run_smart(_mix(share), count)
        blind = await run_blind(_mix(share), count)
        print(
            f"   {share:>11.0%}{blind.calls_per_success:>22.3f}"
            f"{smart.calls_per_success:>22.3f}{saving(smart, blind):>9.1%}"
        )


def _ok(flag: bool) -> str:
    return "yes" if flag else "NO"


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args(argv)
    configure_logging("ERROR")  # one line per attempt would measure the terminal
    pacing_ok = _print_pacing(await bench_pacing(args.runs, args.delay))
    smart = await run_smart(_mix(0.15), args.requests)
    blind = await run_blind(_mix(0.15), args.requests)
    retry_ok = _print_retry(smart, blind, args.requests)
    await _sensitivity(args.requests)
    return 0 if pacing_ok and retry_ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
