"""Model fallback chains, usage accounting and the cost cap, on real servers."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

import grpc
import pytest
from execution_support import S, error_details, final_state, free_port, openai_settings, submit
from fake_openai import FakeOpenAIServer
from marketplace.common.v1 import common_pb2
from marketplace.execution.v1 import execution_pb2 as pb

SCHEMA = '{"type": "object", "required": ["title"]}'


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        body: bytes = reply.read()
        return body.decode()


def _usd(money: common_pb2.Money) -> float:
    return money.units + money.nanos / 1e9


@pytest.fixture
def mini_only() -> Any:
    server = FakeOpenAIServer(known_models=frozenset({"fake-mini"}), usage=(1000, 500))
    server.start()
    yield server
    server.stop()


async def test_an_unknown_model_falls_back_to_the_next_and_each_attempt_names_its_model(
    start_execution: Any, fake_bids: Any, mini_only: FakeOpenAIServer
) -> None:
    bids, _ = fake_bids
    settings = openai_settings(mini_only)
    port = free_port()
    _, stub = await start_execution(
        metrics_port=port,
        llm_fallbacks={"fake-model": ["fake-mini"]},
        llm_prices={"fake-mini": {"prompt": "2", "completion": "8"}},
        **settings,
    )
    execution = await submit(stub, bids.add_task(), max_attempts=1)
    final = await final_state(stub, execution.execution_id)
    assert final.status == S.EXECUTION_STATUS_SUCCEEDED
    assert [(a.model, a.code) for a in final.attempts] == [("fake-model", "404"), ("fake-mini", "")]
    assert [r.body["model"] for r in mini_only.requests] == ["fake-model", "fake-mini"]
    # The model's own error moved on without spending the single attempt allowed.
    assert final.attempts[0].error_type == common_pb2.ERROR_TYPE_PERMANENT
    # Usage: 1000 prompt and 500 completion tokens at 2 and 8 USD a million: 0.006 USD.
    usage = final.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (1000, 500)
    assert usage.cost.currency_code == "USD"
    assert _usd(usage.cost) == pytest.approx(0.006)
    assert final.attempts[1].usage.prompt_tokens == 1000
    assert final.attempts[0].usage.prompt_tokens == 0
    text = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
    assert 'llm_tokens_total{kind="prompt",model="fake-mini"} 1000.0' in text
    assert 'llm_cost_usd_total{model="fake-mini"} 0.006' in text
    assert 'llm_fallbacks_total{model="fake-model",provider="openai",to_model="fake-mini"}' in text
    assert 'llm_call_duration_seconds_count{model="fake-mini",provider="openai"} 1.0' in text
    assert 'llm_permit_wait_seconds_count{model="fake-model",provider="openai"} 1.0' in text


async def test_complete_returns_the_answering_model_and_the_usage(
    start_execution: Any, mini_only: FakeOpenAIServer
) -> None:
    _, stub = await start_execution(
        llm_fallbacks={"fake-model": ["fake-mini"]}, **openai_settings(mini_only)
    )
    reply = await stub.Complete(pb.CompleteRequest(prompt="hi"), timeout=10)
    assert reply.model == "fake-mini"
    assert [a.model for a in reply.attempts] == ["fake-model", "fake-mini"]
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (1000, 500)
    assert _usd(reply.usage.cost) == 0.0  # no price configured


async def test_without_a_fallback_an_unknown_model_fails_permanent_at_once(
    start_execution: Any, fake_bids: Any, mini_only: FakeOpenAIServer
) -> None:
    bids, _ = fake_bids
    _, stub = await start_execution(**openai_settings(mini_only))
    execution = await submit(stub, bids.add_task(), max_attempts=5)
    final = await final_state(stub, execution.execution_id)
    assert final.status == S.EXECUTION_STATUS_FAILED
    assert final.error_type == common_pb2.ERROR_TYPE_PERMANENT
    assert len(final.attempts) == 1


async def test_a_cost_cap_stops_an_execution_with_budget_exhausted(
    start_execution: Any, fake_bids: Any
) -> None:
    bids, _ = fake_bids
    server = FakeOpenAIServer(usage=(1000, 1000))  # 2 USD a call at 1000 USD a million
    server.start()
    try:
        for _ in range(5):
            server.reply(f"not json {_}")
        _, stub = await start_execution(
            llm_prices={"fake-model": {"prompt": "1000", "completion": "1000"}},
            llm_cost_cap_usd="3",
            llm_max_llm_fixable_attempts=5,
            **openai_settings(server),
        )
        execution = await submit(stub, bids.add_task(), output_schema=SCHEMA)
        final = await final_state(stub, execution.execution_id)
        assert final.status == S.EXECUTION_STATUS_FAILED
        assert final.error_type == common_pb2.ERROR_TYPE_PERMANENT
        assert final.error_reason == "BUDGET_EXHAUSTED"
        assert "cap" in final.error_message
        # Two re-asks' worth: 2 USD, then 4 USD >= 3: no third call.
        assert len(final.attempts) == 2
        assert len(server.requests) == 2
        assert _usd(final.usage.cost) == pytest.approx(4.0)
        assert bids.tasks[final.task_id].status != 0
    finally:
        server.stop()


async def test_complete_past_the_cost_cap_is_failed_precondition_budget_exhausted(
    start_execution: Any,
) -> None:
    server = FakeOpenAIServer(usage=(1000, 1000))
    server.start()
    try:
        server.reply("not json")
        server.reply("still not json")
        _, stub = await start_execution(
            llm_prices={"fake-model": {"prompt": "1000", "completion": "1000"}},
            llm_cost_cap_usd="1",
            **openai_settings(server),
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Complete(pb.CompleteRequest(prompt="hi", output_schema=SCHEMA), timeout=10)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        details = error_details(caught.value)
        assert (details.reason, details.error_type) == ("BUDGET_EXHAUSTED", "PERMANENT")
        assert len(server.requests) == 1
    finally:
        server.stop()
