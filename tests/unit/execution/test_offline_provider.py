"""The offline provider: deterministic answers, valid JSON for a schema, seeded failures."""

from __future__ import annotations

import json

import jsonschema
import pytest
from marketplace_common.errors import (
    AgentError,
    ErrorType,
    InvalidArgumentError,
    RateLimitedError,
    UnavailableError,
)
from marketplace_execution.domain.llm import ChatMessage, LLMRequest
from marketplace_execution.llm.offline import (
    OFFLINE_MODEL,
    OfflineFaults,
    OfflineProvider,
    minimal_instance,
)

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 3, "maxLength": 20},
        "score": {"type": "integer", "minimum": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "kind": {"enum": ["bug", "feature"]},
        "done": {"type": "boolean"},
    },
    "required": ["title", "score", "tags", "kind", "done"],
}


async def test_answer_is_derived_from_the_prompt_and_names_an_offline_model() -> None:
    response = await OfflineProvider().complete_async(LLMRequest.from_prompt("Write a haiku"))

    assert response.model == OFFLINE_MODEL
    assert "offline" in response.model
    assert "Write a haiku" in response.text


async def test_same_request_gives_the_same_answer() -> None:
    request = LLMRequest.from_prompt("Summarise the job", output_schema=SCHEMA)

    first = await OfflineProvider().complete_async(request)
    second = await OfflineProvider().complete_async(request)

    assert first == second


async def test_answer_for_an_output_schema_is_a_valid_instance() -> None:
    request = LLMRequest.from_prompt("Classify this ticket", output_schema=SCHEMA)

    response = await OfflineProvider().complete_async(request)

    jsonschema.validate(json.loads(response.text), SCHEMA)


def test_minimal_instance_honours_const_and_nested_objects() -> None:
    schema = {
        "type": "object",
        "properties": {"v": {"const": 2}, "inner": {"properties": {"n": {"type": "number"}}}},
    }

    instance = minimal_instance(schema, "x")

    jsonschema.validate(instance, schema)
    assert instance == {"v": 2, "inner": {"n": 0.0}}


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


async def _outcomes(provider: OfflineProvider, prompts: list[str]) -> list[str]:
    outcomes = []
    for prompt in prompts:
        try:
            response = await provider.complete_async(
                LLMRequest.from_prompt(prompt, output_schema={"type": "object"})
            )
        except AgentError as exc:
            outcomes.append(type(exc).__name__)
        else:
            outcomes.append("ok" if _is_json_object(response.text) else "malformed")
    return outcomes


async def test_failure_injection_is_deterministic_for_a_seed() -> None:
    faults = OfflineFaults(transient=0.2, rate_limited=0.1, permanent=0.1, malformed=0.1, seed=7)
    prompts = [f"job {i}" for i in range(200)]

    first = await _outcomes(OfflineProvider(faults), prompts)
    second = await _outcomes(OfflineProvider(faults), list(prompts))

    assert first == second
    assert {"ok", "malformed", "UnavailableError", "RateLimitedError"} <= set(first)
    assert "InvalidArgumentError" in first


async def test_failure_rates_are_roughly_the_configured_ones() -> None:
    faults = OfflineFaults(transient=0.3, seed=1)
    outcomes = await _outcomes(OfflineProvider(faults), [f"p{i}" for i in range(2000)])

    assert outcomes.count("UnavailableError") / len(outcomes) == pytest.approx(0.3, abs=0.04)


async def test_rate_limited_failure_carries_the_configured_retry_after() -> None:
    provider = OfflineProvider(OfflineFaults(rate_limited=1.0, retry_after=2.5))

    with pytest.raises(RateLimitedError) as caught:
        await provider.complete_async(LLMRequest.from_prompt("hello"))

    assert caught.value.retry_after == 2.5
    assert caught.value.error_type is ErrorType.TRANSIENT


async def test_permanent_failure_sticks_to_the_request() -> None:
    provider = OfflineProvider(OfflineFaults(permanent=1.0))
    request = LLMRequest.from_prompt("too long a context")

    for _ in range(3):
        with pytest.raises(InvalidArgumentError):
            await provider.complete_async(request)


async def test_transient_failure_may_clear_on_a_later_call() -> None:
    provider = OfflineProvider(OfflineFaults(transient=0.5, seed=3))
    request = LLMRequest.from_prompt("flaky")
    results = []
    for _ in range(20):
        try:
            await provider.complete_async(request)
            results.append(True)
        except UnavailableError:
            results.append(False)

    assert True in results
    assert False in results


def test_rates_above_one_are_rejected() -> None:
    with pytest.raises(ValueError, match="must not exceed 1"):
        OfflineFaults(transient=0.6, rate_limited=0.6)


async def test_malformed_answer_repeats_for_the_same_conversation() -> None:
    provider = OfflineProvider(OfflineFaults(malformed=1.0))
    request = LLMRequest.from_prompt("classify", output_schema={"type": "object"})

    first = await provider.complete_async(request)
    second = await provider.complete_async(request)

    assert first.text == second.text
    assert not _is_json_object(first.text)


async def test_a_re_ask_with_feedback_gets_a_fresh_draw() -> None:
    provider = OfflineProvider(OfflineFaults(malformed=0.5, seed=2))
    answers = set()
    for i in range(20):
        request = LLMRequest.from_prompt("classify", output_schema={"type": "object"})
        request = request.with_messages(ChatMessage("user", f"feedback {i}"))
        answers.add(_is_json_object((await provider.complete_async(request)).text))

    assert answers == {True, False}
