"""OpenAIProvider through the real openai client against a local wire-format server."""

from __future__ import annotations

import time
import warnings
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import openai
import pytest
from marketplace_common.classify import (
    as_agent_error,
    categorize_exception,
    error_code,
    server_directed_delay,
)
from marketplace_common.errors import AgentError, ErrorType
from marketplace_execution.domain.llm import LLMRequest
from marketplace_execution.llm.openai_provider import OpenAIProvider

if TYPE_CHECKING:
    from fake_openai import FakeOpenAIServer

SECRET = "sk-test-secret-key-123"


@pytest.fixture
async def provider(openai_server: FakeOpenAIServer) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(
        model="fake-model", base_url=openai_server.base_url, api_key=SECRET, timeout=5.0
    )
    yield provider
    await provider.aclose()


async def _failure(provider: OpenAIProvider, request: LLMRequest | None = None) -> AgentError:
    """The provider's error: classified (an AgentError), the client's own exception its cause."""
    with pytest.raises(AgentError) as caught:
        await provider.complete_async(request or LLMRequest.from_prompt("hi"))
    assert isinstance(caught.value.__cause__, openai.OpenAIError)
    return caught.value


async def test_answer_text_model_and_usage_come_back(
    provider: OpenAIProvider, openai_server: FakeOpenAIServer
) -> None:
    openai_server.reply("hello there")

    response = await provider.complete_async(LLMRequest.from_prompt("hi"))

    assert response.text == "hello there"
    assert response.model == "fake-model"
    assert response.usage is not None
    assert response.usage.total_tokens == 4
    assert openai_server.requests[0].headers["authorization"] == f"Bearer {SECRET}"


async def test_output_schema_is_sent_as_json_schema_response_format(
    provider: OpenAIProvider, openai_server: FakeOpenAIServer
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}

    await provider.complete_async(LLMRequest.from_prompt("hi", output_schema=schema))

    response_format = openai_server.requests[0].body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["schema"] == schema


async def test_rate_limit_is_transient_with_the_retry_after_seconds(
    provider: OpenAIProvider, openai_server: FakeOpenAIServer
) -> None:
    openai_server.fail(429, "slow down", headers={"Retry-After": "1"})

    exc = await _failure(provider)

    assert categorize_exception(exc) is ErrorType.TRANSIENT
    assert server_directed_delay(exc) == 1.0
    assert error_code(exc) == "429"
    assert len(openai_server.requests) == 1  # the client's own retries are off


async def test_retry_after_ms_header_wins_over_retry_after(
    provider: OpenAIProvider, openai_server: FakeOpenAIServer
) -> None:
    openai_server.fail(429, headers={"retry-after-ms": "1500", "Retry-After": "9"})

    exc = await _failure(provider)

    assert server_directed_delay(exc) == 1.5


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_transient(
    provider: OpenAIProvider, openai_server: FakeOpenAIServer, status: int
) -> None:
    openai_server.fail(status, "overloaded")

    exc = await _failure(provider)

    assert categorize_exception(exc) is ErrorType.TRANSIENT
    assert error_code(exc) == str(status)


async def test_bad_api_key_is_permanent(
    provider: OpenAIProvider, openai_server: FakeOpenAIServer
) -> None:
    openai_server.fail(401, "Incorrect API key provided", code="invalid_api_key")

    exc = await _failure(provider)

    assert categorize_exception(exc) is ErrorType.PERMANENT
    assert error_code(exc) == "401"


async def test_context_length_exceeded_is_permanent(
    provider: OpenAIProvider, openai_server: FakeOpenAIServer
) -> None:
    openai_server.fail(400, "maximum context length exceeded", code="context_length_exceeded")

    exc = await _failure(provider)

    assert categorize_exception(exc) is ErrorType.PERMANENT
    assert as_agent_error(exc).reason == "CONTEXT_LENGTH_EXCEEDED"


async def test_a_call_past_its_timeout_is_transient(
    provider: OpenAIProvider, openai_server: FakeOpenAIServer
) -> None:
    openai_server.stall(5.0)

    exc = await _failure(provider, LLMRequest.from_prompt("hi", timeout=0.3))

    assert isinstance(exc.__cause__, openai.APITimeoutError)
    assert categorize_exception(exc) is ErrorType.TRANSIENT
    assert error_code(exc) == "APITimeoutError"


async def test_the_configured_timeout_caps_a_longer_request_timeout(
    openai_server: FakeOpenAIServer,
) -> None:
    # The attempt loop sets a request's timeout to the time left before the job's
    # deadline; that must not lift the operator's per-call timeout.
    openai_server.stall(5.0)
    provider = OpenAIProvider(
        model="fake-model", base_url=openai_server.base_url, api_key=SECRET, timeout=0.3
    )
    try:
        started = time.monotonic()
        exc = await _failure(provider, LLMRequest.from_prompt("hi", timeout=600.0))
        elapsed = time.monotonic() - started
    finally:
        await provider.aclose()

    assert isinstance(exc.__cause__, openai.APITimeoutError)
    assert elapsed < 3.0


def test_repr_does_not_show_the_api_key() -> None:
    provider = OpenAIProvider(model="m", base_url="http://127.0.0.1:9/v1", api_key=SECRET)

    assert SECRET not in repr(provider)


def test_sync_complete_works_outside_an_event_loop(openai_server: FakeOpenAIServer) -> None:
    openai_server.reply("from a script")
    provider = OpenAIProvider(model="m", base_url=openai_server.base_url, api_key=SECRET)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        response = provider.complete(LLMRequest.from_prompt("hi"))

    assert response.text == "from a script"


async def test_sync_complete_inside_a_running_loop_warns_and_answers(
    provider: OpenAIProvider, openai_server: FakeOpenAIServer
) -> None:
    openai_server.reply("first")
    openai_server.reply("second")
    await provider.complete_async(LLMRequest.from_prompt("warm the shared client"))

    with pytest.warns(RuntimeWarning, match="complete_async"):
        response = provider.complete(LLMRequest.from_prompt("hi"))

    assert response.text == "second"
    after = await provider.complete_async(LLMRequest.from_prompt("shared client still works"))
    assert after.text == "ok"
