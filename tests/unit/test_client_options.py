"""client.py without a server: timeouts, metadata, service config."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from marketplace_common.client import (
    DEADLINE_MARGIN_SECONDS,
    call_metadata,
    call_timeout,
    channel_options,
    retry_service_config,
)
from marketplace_common.rpc_context import CallInfo, reset_current_call, set_current_call


@pytest.fixture
def in_rpc() -> Iterator[CallInfo]:
    call = CallInfo(method="/a.B/C", grpc_type="unary", request_id="req-1")
    token = set_current_call(call)
    yield call
    reset_current_call(token)


def test_call_timeout_outside_an_rpc_is_the_default() -> None:
    assert call_timeout(5.0) == 5.0


def test_call_timeout_in_an_rpc_without_deadline_is_the_default(in_rpc: CallInfo) -> None:
    assert call_timeout(5.0) == 5.0


def test_call_timeout_is_clamped_to_the_remaining_deadline(in_rpc: CallInfo) -> None:
    in_rpc.deadline = time.monotonic() + 1.0
    timeout = call_timeout(5.0)
    assert 0.9 - DEADLINE_MARGIN_SECONDS < timeout <= 1.0 - DEADLINE_MARGIN_SECONDS


def test_call_timeout_keeps_a_shorter_default(in_rpc: CallInfo) -> None:
    in_rpc.deadline = time.monotonic() + 10.0
    assert call_timeout(2.0) == 2.0


def test_call_timeout_after_the_deadline_is_tiny_but_positive(in_rpc: CallInfo) -> None:
    in_rpc.deadline = time.monotonic() - 1.0
    assert 0 < call_timeout(5.0) <= 0.001


def test_call_metadata_carries_token_and_request_id(in_rpc: CallInfo) -> None:
    assert call_metadata("tok") == [("authorization", "Bearer tok"), ("x-request-id", "req-1")]


def test_call_metadata_outside_an_rpc_has_no_request_id() -> None:
    assert call_metadata() == []


def test_retry_policy_retries_only_unavailable() -> None:
    config = json.loads(retry_service_config(max_attempts=3))
    policy = config["methodConfig"][0]["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert policy["maxAttempts"] == 3


def test_channel_options_enable_retries_and_keepalive() -> None:
    options = dict(channel_options())
    assert options["grpc.enable_retries"] == 1
    assert options["grpc.keepalive_time_ms"] >= 10_000
