"""The issue's fault mix: AttemptRunner + OpenAIProvider + the real openai client over HTTP.

Real time, real sockets: the server's arrival times show the delays the
loop actually honoured.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
import structlog
from marketplace_common.errors import ErrorType
from marketplace_common.retrying import DelaySource, RetryPolicy
from marketplace_execution.domain.attempt_loop import AttemptRunner
from marketplace_execution.domain.ports import JobSpec
from marketplace_execution.llm.openai_provider import OpenAIProvider
from marketplace_execution.metrics import PrometheusExecutionMetrics
from prometheus_client import CollectorRegistry

if TYPE_CHECKING:
    from fake_openai import FakeOpenAIServer

SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}, "hours": {"type": "integer"}},
    "required": ["summary", "hours"],
}


@pytest.fixture
async def provider(openai_server: FakeOpenAIServer) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(
        model="fake-model", base_url=openai_server.base_url, api_key="sk-test", timeout=5.0
    )
    yield provider
    await provider.aclose()


def job(prompt: str, *, output_schema: str | None = None, max_attempts: int = 4) -> JobSpec:
    return JobSpec(prompt, "", output_schema, max_attempts)


def make_runner(provider: OpenAIProvider, **policy: float | None) -> AttemptRunner:
    settings = {"base_delay": 0.05, "max_delay": 5.0, "deadline": 20.0, **policy}
    return AttemptRunner(
        provider,
        policy=RetryPolicy(**settings),  # type: ignore[arg-type]
        metrics=PrometheusExecutionMetrics(CollectorRegistry()),
    )


async def test_rate_limit_with_retry_after_waits_the_server_delay_then_succeeds(
    provider: OpenAIProvider, openai_server: FakeOpenAIServer
) -> None:
    openai_server.fail(429, "Rate limit reached", headers={"Retry-After": "1"})
    openai_server.reply("done")

    outcome = await make_runner(provider).run(job("hi"))

    assert outcome.text == "done"
    first, second = outcome.attempts
    assert (first.error_type, first.code) == (ErrorType.TRANSIENT, "429")
    assert (first.retry_delay, first.delay_source) == (1.0, DelaySource.SERVER_RETRY_AFTER)
    assert second.error_type is None
    gap = openai_server.requests[1].at - openai_server.requests[0].at
    # At least the server's delay, and not the delay twice over (slack for a busy machine).
    assert 1.0 <= gap < 1.9


async def test_bad_api_key_is_one_permanent_attempt(
    provider: OpenAIProvider, openai_server: FakeOpenAIServer
) -> None:
    openai_server.fail(401, "Incorrect API key provided", code="invalid_api_key")

    outcome = await make_runner(provider).run(job("hi"))

    assert len(openai_server.requests) == 1
    [record] = outcome.attempts
    assert (record.error_type, record.code) == (ErrorType.PERMANENT, "401")
    assert outcome.error is not None
    assert outcome.error.error_type is ErrorType.PERMANENT
    assert "sk-test" not in outcome.error.message


async def test_unavailable_three_times_fails_at_max_attempts_three(
    provider: OpenAIProvider, openai_server: FakeOpenAIServer
) -> None:
    for _ in range(3):
        openai_server.fail(503, "overloaded")
    openai_server.reply("too late")

    outcome = await make_runner(provider).run(job("hi", max_attempts=3))

    assert len(openai_server.requests) == 3
    assert [r.code for r in outcome.attempts] == ["503", "503", "503"]
    assert [r.delay_source for r in outcome.attempts] == [
        DelaySource.BACKOFF,
        DelaySource.BACKOFF,
        DelaySource.NONE,
    ]
    assert outcome.error is not None
    assert outcome.error.error_type is ErrorType.TRANSIENT


async def test_unavailable_three_times_then_success_with_max_attempts_four(
    provider: OpenAIProvider, openai_server: FakeOpenAIServer
) -> None:
    for _ in range(3):
        openai_server.fail(503, "overloaded")
    openai_server.reply("finally")

    outcome = await make_runner(provider).run(job("hi", max_attempts=4))

    assert outcome.text == "finally"
    assert len(outcome.attempts) == 4
    backoffs = [r.retry_delay for r in outcome.attempts[:3]]
    assert all(0 <= d <= 0.05 * 2**i for i, d in enumerate(backoffs))


async def test_invalid_json_is_re_asked_with_the_validation_error_then_succeeds(
    provider: OpenAIProvider, openai_server: FakeOpenAIServer
) -> None:
    openai_server.reply('{"summary": "fix the bug"')  # cut off: not JSON
    openai_server.reply(json.dumps({"summary": "fix the bug", "hours": 3}))

    outcome = await make_runner(provider).run(
        job("Estimate the job", output_schema=json.dumps(SCHEMA))
    )

    assert outcome.text is not None
    assert json.loads(outcome.text) == {"summary": "fix the bug", "hours": 3}
    assert [r.error_type for r in outcome.attempts] == [ErrorType.LLM_FIXABLE, None]
    reask = openai_server.requests[1].messages
    assert reask[-2] == {"role": "assistant", "content": '{"summary": "fix the bug"'}
    assert reask[-1]["role"] == "user"
    assert "not valid JSON" in reask[-1]["content"]
    assert openai_server.requests[1].body["response_format"]["type"] == "json_schema"


async def test_schema_violation_reaches_the_server_in_the_re_ask(
    provider: OpenAIProvider, openai_server: FakeOpenAIServer
) -> None:
    openai_server.reply(json.dumps({"summary": "x"}))
    openai_server.reply(json.dumps({"summary": "x", "hours": 1}))

    outcome = await make_runner(provider).run(job("Estimate", output_schema=json.dumps(SCHEMA)))

    assert outcome.succeeded
    assert "'hours' is a required property" in openai_server.requests[1].messages[-1]["content"]


async def test_a_timeout_is_retried(openai_server: FakeOpenAIServer) -> None:
    openai_server.stall(5.0)
    openai_server.reply("second time lucky")
    # No deadline: the provider's own per-call timeout bounds each call.
    provider = OpenAIProvider(
        model="fake-model", base_url=openai_server.base_url, api_key="sk-test", timeout=0.3
    )

    outcome = await make_runner(provider, deadline=None).run(job("hi"))
    await provider.aclose()

    assert outcome.text == "second time lucky"
    assert outcome.attempts[0].error_type is ErrorType.TRANSIENT
    assert outcome.attempts[0].code == "APITimeoutError"


async def test_context_length_exceeded_is_not_retried(
    provider: OpenAIProvider, openai_server: FakeOpenAIServer
) -> None:
    openai_server.fail(
        400, "This model's maximum context length is 8192 tokens", code="context_length_exceeded"
    )

    outcome = await make_runner(provider).run(job("a very long prompt"))

    assert len(openai_server.requests) == 1
    assert outcome.error is not None
    assert outcome.error.reason == "CONTEXT_LENGTH_EXCEEDED"
    assert outcome.attempts[0].code == "400"


async def test_server_error_500_is_retried(
    provider: OpenAIProvider, openai_server: FakeOpenAIServer
) -> None:
    openai_server.fail(500, "internal")

    outcome = await make_runner(provider).run(job("hi"))

    assert outcome.succeeded
    assert [r.code for r in outcome.attempts] == ["500", ""]


async def test_the_api_key_reaches_neither_logs_nor_records(
    openai_server: FakeOpenAIServer,
) -> None:
    secret = "sk-live-abcdef0123456789"
    provider = OpenAIProvider(model="m", base_url=openai_server.base_url, api_key=secret)
    openai_server.fail(401, f"Incorrect API key provided: {secret}", code="invalid_api_key")

    with structlog.testing.capture_logs() as logs:
        outcome = await make_runner(provider).run(job("hi"))
    await provider.aclose()

    assert logs
    assert secret not in repr(logs)
    assert secret not in repr(outcome.attempts)
    assert outcome.error is not None
    assert secret not in outcome.error.message
