"""Complete over a real channel: the caller's deadline, error mapping, attempts on the wire,
and the attempt counters on the service's /metrics."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

import grpc
import pytest
from execution_support import error_details, free_port, openai_settings
from marketplace.execution.v1 import execution_pb2 as pb

RECURSIVE_SCHEMA = json.dumps({"type": "array", "items": {"$ref": "#"}})
OBJECT_SCHEMA = json.dumps({"type": "object", "required": ["answer"]})


async def test_retry_after_past_the_callers_deadline_fails_fast_with_retry_info(
    start_execution: Any, openai_server: Any
) -> None:
    openai_server.fail(429, "slow down", headers={"retry-after": "5"})
    # A cap above 5 s: only the caller's 2 s deadline makes the delay too long.
    _, stub = await start_execution(llm_backoff_max_seconds=30.0, **openai_settings(openai_server))
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(pb.CompleteRequest(prompt="hi"), timeout=2.0)
    elapsed = time.monotonic() - started
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    limited = error_details(caught.value)
    assert (limited.reason, limited.error_type) == ("RATE_LIMITED", "TRANSIENT")
    assert limited.retry_delay == pytest.approx(5.0)
    # Well before the 2 s deadline (sleeping through the 5 s delay would end in DEADLINE_EXCEEDED).
    assert elapsed < 1.9
    assert len(openai_server.requests) == 1


async def test_complete_with_output_invalid_twice_is_llm_output_invalid_with_bad_request(
    start_execution: Any,
) -> None:
    _, stub = await start_execution(llm_offline_malformed_rate=1.0)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(pb.CompleteRequest(prompt="hi", output_schema=OBJECT_SCHEMA))
    details = error_details(caught.value)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # The same validation error twice in a row turns PERMANENT (issue 4).
    assert (details.reason, details.error_type) == ("LLM_OUTPUT_INVALID", "PERMANENT")
    assert details.fields  # BadRequest carries the last validation errors


async def test_complete_with_an_answer_too_deep_to_validate_is_not_internal(
    start_execution: Any, openai_server: Any
) -> None:
    for _ in range(3):
        openai_server.reply("[" * 300 + "]" * 300)
    _, stub = await start_execution(**openai_settings(openai_server))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            pb.CompleteRequest(prompt="hi", output_schema=RECURSIVE_SCHEMA), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(caught.value).reason == "LLM_OUTPUT_INVALID"


async def test_server_directed_delay_is_on_the_wire_as_retry_delay_and_source(
    start_execution: Any, openai_server: Any
) -> None:
    openai_server.fail(429, "slow down", headers={"retry-after": "1"})
    openai_server.reply("fine")
    _, stub = await start_execution(llm_backoff_max_seconds=30.0, **openai_settings(openai_server))
    response = await stub.Complete(pb.CompleteRequest(prompt="hi"), timeout=10)
    first, second = response.attempts
    assert first.code == "429"
    assert first.retry_delay.ToTimedelta().total_seconds() == pytest.approx(1.0)
    assert first.retry_delay_source == pb.RETRY_DELAY_SOURCE_SERVER_RETRY_AFTER
    assert second.retry_delay_source == pb.RETRY_DELAY_SOURCE_UNSPECIFIED
    assert response.text == "fine"


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        body: bytes = reply.read()
        return body.decode()


async def test_llm_attempts_are_counted_on_the_service_metrics_endpoint(
    start_execution: Any,
) -> None:
    port = free_port()
    _, stub = await start_execution(
        metrics_port=port, llm_offline_transient_rate=0.5, llm_offline_seed=7
    )
    for _ in range(4):
        await stub.Complete(pb.CompleteRequest(prompt="hi", max_attempts=10), timeout=10)
    text = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
    succeeded = 'llm_attempts_total{error_type="NONE",outcome="succeeded",provider="offline"} 4.0'
    assert succeeded in text
    assert 'error_type="TRANSIENT",outcome="retried",provider="offline"' in text
