"""AttemptRunner: smart retry per docs/errors.md, on a virtual clock."""

from __future__ import annotations

import asyncio
import json
import random
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from marketplace_common.errors import (
    ErrorType,
    InvalidArgumentError,
    LLMOutputInvalidError,
    PermanentError,
    RateLimitedError,
    UnauthenticatedError,
    UnavailableError,
)
from marketplace_common.retrying import DelaySource, RetryPolicy, SystemClock
from marketplace_execution.domain.attempt_loop import AttemptRunner
from marketplace_execution.domain.llm import LLMProvider, LLMRequest, LLMResponse
from marketplace_execution.domain.models import AttemptView
from marketplace_execution.domain.pacing import Pacer, PacingConfig
from marketplace_execution.domain.ports import JobSpec
from marketplace_execution.metrics import PrometheusExecutionMetrics
from prometheus_client import CollectorRegistry

if TYPE_CHECKING:
    from tests.unit.execution.conftest import FakeClock

SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "score": {"type": "integer"}},
    "required": ["title", "score"],
}
GOOD = json.dumps({"title": "t", "score": 1})


class ScriptedProvider(LLMProvider):
    """Answers from a script: a string is an answer, an exception is raised."""

    def __init__(self, *steps: str | BaseException, delay: float = 0.0) -> None:
        self.steps: deque[str | BaseException] = deque(steps)
        self.requests: list[LLMRequest] = []
        self.delay = delay
        self.called = asyncio.Event()

    @property
    def name(self) -> str:
        return "scripted"

    async def complete_async(self, request: LLMRequest) -> LLMResponse:
        self.requests.append(request)
        self.called.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        step = self.steps.popleft() if self.steps else "ok"
        if isinstance(step, BaseException):
            raise step
        return LLMResponse(text=step, model="scripted-1")


def runner(
    provider: LLMProvider,
    clock: FakeClock,
    registry: CollectorRegistry | None = None,
    **policy: float,
) -> AttemptRunner:
    return AttemptRunner(
        provider,
        Pacer(clock=clock),
        RetryPolicy(**policy),  # type: ignore[arg-type]
        clock=clock,
        rng=random.Random(1),
        metrics=PrometheusExecutionMetrics(registry or CollectorRegistry()),
    )


def prompt(output_schema: Mapping[str, Any] | None = None, *, max_attempts: int = 4) -> JobSpec:
    schema = None if output_schema is None else json.dumps(output_schema)
    return JobSpec("Write the title", "", schema, max_attempts)


async def test_a_first_answer_is_one_successful_attempt(clock: FakeClock) -> None:
    outcome = await runner(ScriptedProvider("hello"), clock).run(prompt())

    assert outcome.succeeded
    assert outcome.text == "hello"
    assert outcome.model == "scripted-1"
    [record] = outcome.attempts
    assert (record.number, record.error_type, record.code) == (1, None, "")
    assert (record.retry_delay, record.delay_source) == (0.0, DelaySource.NONE)


async def test_transient_error_is_retried_after_a_backoff(clock: FakeClock) -> None:
    provider = ScriptedProvider(UnavailableError("down"), "hello")

    outcome = await runner(provider, clock, base_delay=0.5).run(prompt())

    assert outcome.text == "hello"
    first, second = outcome.attempts
    assert first.error_type is ErrorType.TRANSIENT
    assert first.code == "UNAVAILABLE"
    assert first.delay_source == DelaySource.BACKOFF
    assert 0 <= first.retry_delay <= 0.5
    assert clock.sleeps == [first.retry_delay]
    assert second.error_type is None


async def test_server_directed_delay_wins_over_backoff(clock: FakeClock) -> None:
    provider = ScriptedProvider(RateLimitedError("slow down", retry_after=1.0), "hello")

    outcome = await runner(provider, clock).run(prompt())

    first = outcome.attempts[0]
    assert (first.retry_delay, first.delay_source) == (1.0, DelaySource.SERVER_RETRY_AFTER)
    # The 429 cooled the key down; the next call's permit waited it out (in two
    # sleeps: the shared state is checked once more shortly before the slot).
    assert sum(clock.sleeps) == pytest.approx(1.0)
    assert outcome.attempts[1].pacing_delay == pytest.approx(1.0)
    assert outcome.succeeded


async def test_server_delay_above_the_cap_fails_now_with_the_delay(clock: FakeClock) -> None:
    provider = ScriptedProvider(RateLimitedError("come back later", retry_after=60.0))

    outcome = await runner(provider, clock, max_delay=10.0).run(prompt())

    assert len(outcome.attempts) == 1
    assert outcome.error is not None
    assert outcome.error.error_type is ErrorType.TRANSIENT
    assert outcome.error.retry_after == 60.0
    assert clock.sleeps == []


async def test_server_delay_past_the_deadline_fails_now(clock: FakeClock) -> None:
    provider = ScriptedProvider(RateLimitedError("later", retry_after=5.0))

    outcome = await runner(provider, clock, deadline=3.0).run(prompt())

    assert len(outcome.attempts) == 1
    assert outcome.error is not None
    assert outcome.error.retry_after == 5.0


async def test_transient_errors_stop_at_max_attempts(clock: FakeClock) -> None:
    provider = ScriptedProvider(*[UnavailableError("down")] * 5)

    outcome = await runner(provider, clock).run(prompt(max_attempts=3))

    assert len(provider.requests) == 3
    assert [a.error_type for a in outcome.attempts] == [ErrorType.TRANSIENT] * 3
    assert outcome.attempts[-1].delay_source == DelaySource.NONE
    assert outcome.error is not None
    assert outcome.error.error_type is ErrorType.TRANSIENT


async def test_permanent_error_stops_at_once(clock: FakeClock) -> None:
    provider = ScriptedProvider(UnauthenticatedError("bad key"), "never")

    outcome = await runner(provider, clock).run(prompt())

    assert len(provider.requests) == 1
    assert outcome.error is not None
    assert outcome.error.error_type is ErrorType.PERMANENT
    assert outcome.attempts[0].code == "UNAUTHENTICATED"


async def test_an_unexpected_exception_is_fatal_and_stops_at_once(clock: FakeClock) -> None:
    provider = ScriptedProvider(RuntimeError("bug in a provider"), "never")

    outcome = await runner(provider, clock).run(prompt())

    assert len(provider.requests) == 1
    assert outcome.error is not None
    assert outcome.error.error_type is ErrorType.FATAL
    assert "bug" not in outcome.error.message  # the safe message, not the internals


async def test_invalid_json_is_re_asked_with_the_validation_error(clock: FakeClock) -> None:
    provider = ScriptedProvider("not json", GOOD)

    outcome = await runner(provider, clock).run(prompt(SCHEMA))

    assert outcome.text is not None
    assert json.loads(outcome.text) == {"title": "t", "score": 1}
    assert [a.error_type for a in outcome.attempts] == [ErrorType.LLM_FIXABLE, None]
    reask = provider.requests[1].messages
    assert (reask[-2].role, reask[-2].content) == ("assistant", "not json")
    assert reask[-1].role == "user"
    assert "not valid JSON" in reask[-1].content
    assert clock.sleeps == []


async def test_schema_violations_are_fed_back_by_field(clock: FakeClock) -> None:
    provider = ScriptedProvider(json.dumps({"title": 3}), GOOD)

    await runner(provider, clock).run(prompt(SCHEMA))

    feedback = provider.requests[1].messages[-1].content
    assert "'score' is a required property" in feedback
    assert "at $.title: 3 is not of type 'string'" in feedback


async def test_the_same_validation_error_twice_in_a_row_is_permanent(clock: FakeClock) -> None:
    provider = ScriptedProvider("not json", "not json", GOOD)

    outcome = await runner(provider, clock, max_llm_fixable_attempts=5).run(prompt(SCHEMA))

    assert len(provider.requests) == 2
    assert isinstance(outcome.error, LLMOutputInvalidError)
    assert outcome.error.violations
    assert outcome.attempts[-1].error_type is ErrorType.PERMANENT


async def test_re_asks_stop_when_their_budget_is_spent(clock: FakeClock) -> None:
    answers = [json.dumps({"title": i}) for i in range(5)]
    provider = ScriptedProvider(*answers)

    outcome = await runner(provider, clock, max_llm_fixable_attempts=2).run(prompt(SCHEMA))

    assert len(provider.requests) == 2
    assert isinstance(outcome.error, LLMOutputInvalidError)


async def test_re_asks_do_not_use_the_transient_budget(clock: FakeClock) -> None:
    provider = ScriptedProvider("bad", "{", UnavailableError("down"), GOOD)

    outcome = await runner(provider, clock).run(prompt(SCHEMA, max_attempts=2))

    assert outcome.succeeded
    assert len(outcome.attempts) == 4


async def test_on_attempt_is_awaited_before_the_next_attempt(clock: FakeClock) -> None:
    provider = ScriptedProvider(UnavailableError("down"), "hello")
    seen: list[tuple[int, int, bool]] = []

    async def store(attempt: AttemptView, retry_follows: bool) -> None:
        await asyncio.sleep(0)
        seen.append((attempt.number, len(provider.requests), retry_follows))

    await runner(provider, clock).run(prompt(), on_attempt=store)

    assert seen == [(1, 1, True), (2, 2, False)]


async def test_previous_attempts_continue_the_numbering_and_use_the_budget(
    clock: FakeClock,
) -> None:
    provider = ScriptedProvider(UnavailableError("down"), UnavailableError("down"), "ok")

    at = datetime(2026, 1, 1, tzinfo=UTC)
    previous = [AttemptView(n, at, at, ErrorType.TRANSIENT, "UNAVAILABLE") for n in (1, 2)]

    outcome = await runner(provider, clock).run(prompt(max_attempts=3), previous=previous)

    assert [a.number for a in outcome.attempts] == [3]
    assert outcome.error is not None


async def test_an_invalid_output_schema_fails_without_a_call(clock: FakeClock) -> None:
    provider = ScriptedProvider("never")

    outcome = await runner(provider, clock).run(prompt({"type": "no-such-type"}))

    assert isinstance(outcome.error, InvalidArgumentError)
    assert outcome.attempts == ()
    assert provider.requests == []


async def test_pacing_wait_is_reported_per_attempt(clock: FakeClock) -> None:
    provider = ScriptedProvider("bad", GOOD)
    pacer = Pacer(PacingConfig(delay=2.0), clock=clock)
    attempt_runner = AttemptRunner(provider, pacer, RetryPolicy(), clock=clock)

    outcome = await attempt_runner.run(prompt(SCHEMA))

    assert [a.pacing_delay for a in outcome.attempts] == [2.0, 2.0]
    first = outcome.attempts[0]
    assert (first.retry_delay, first.delay_source) == (2.0, DelaySource.PACING)


async def test_attempts_are_counted_by_provider_type_and_outcome(clock: FakeClock) -> None:
    registry = CollectorRegistry()
    provider = ScriptedProvider(UnavailableError("down"), PermanentError("no"))

    await runner(provider, clock, registry).run(prompt())

    def count(error_type: str, outcome: str) -> float | None:
        labels = {"provider": "scripted", "error_type": error_type, "outcome": outcome}
        return registry.get_sample_value("llm_attempts_total", labels)

    assert count("TRANSIENT", "retried") == 1
    assert count("PERMANENT", "failed") == 1
    assert count("NONE", "succeeded") is None


async def test_cancellation_during_a_backoff_sleep_propagates_promptly() -> None:
    provider = ScriptedProvider(RateLimitedError("wait", retry_after=30.0))
    attempt_runner = AttemptRunner(
        provider, policy=RetryPolicy(max_delay=60.0, deadline=None), clock=SystemClock()
    )
    task = asyncio.create_task(attempt_runner.run(prompt()))
    await provider.called.wait()
    await asyncio.sleep(0.05)  # the runner is now in its 30 s sleep

    task.cancel()
    async with asyncio.timeout(0.5):
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_cancellation_during_a_call_propagates_and_is_counted() -> None:
    registry = CollectorRegistry()
    provider = ScriptedProvider("late", delay=30.0)
    attempt_runner = AttemptRunner(provider, metrics=PrometheusExecutionMetrics(registry))
    task = asyncio.create_task(attempt_runner.run(prompt()))
    await provider.called.wait()

    task.cancel()
    async with asyncio.timeout(0.5):
        with pytest.raises(asyncio.CancelledError):
            await task
    labels = {"provider": "scripted", "error_type": "NONE", "outcome": "cancelled"}
    assert registry.get_sample_value("llm_attempts_total", labels) == 1
