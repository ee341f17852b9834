"""server_directed_delay: RetryInfo, grpc-retry-pushback-ms, retry-after-ms and Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import grpc
import grpc.aio
import httpx2
import openai
import pytest
from marketplace_common.delays import server_directed_delay
from marketplace_common.errors import RateLimitedError
from marketplace_common.status import RETRY_PUSHBACK_METADATA_KEY, to_rpc_status


def status_error(status: int, *, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://llm.test/v1/chat/completions")
    response = httpx2.Response(status, headers=headers, request=request)
    return openai.APIStatusError("provider says no", response=response, body=None)


def rpc_error(code: grpc.StatusCode, *trailing: tuple[str, str | bytes]) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), "failed", None
    )


def test_delay_from_agent_error_retry_after() -> None:
    assert server_directed_delay(RateLimitedError("slow", retry_after=3.0)) == 3.0


def test_delay_from_grpc_pushback() -> None:
    exc = rpc_error(grpc.StatusCode.UNAVAILABLE, (RETRY_PUSHBACK_METADATA_KEY, "2500"))
    assert server_directed_delay(exc) == 2.5


def test_delay_from_retry_after_ms_header_wins_over_retry_after() -> None:
    exc = status_error(429, headers={"retry-after-ms": "1500", "retry-after": "9"})
    assert server_directed_delay(exc) == 1.5


def test_delay_from_retry_after_seconds_header() -> None:
    assert server_directed_delay(status_error(503, headers={"Retry-After": "7"})) == 7.0


def test_delay_from_retry_after_http_date() -> None:
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    exc = status_error(503, headers={"Retry-After": header})
    assert server_directed_delay(exc, now=now) == 30.0


def test_past_http_date_means_no_wait() -> None:
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert server_directed_delay(status_error(503, headers={"Retry-After": header}), now=now) == 0


@pytest.mark.parametrize("value", ["soon", "-5", "nan", "inf"])
def test_unusable_retry_after_is_ignored(value: str) -> None:
    assert server_directed_delay(status_error(429, headers={"Retry-After": value})) is None


def test_no_directed_delay_without_a_source() -> None:
    assert server_directed_delay(status_error(429)) is None
    assert server_directed_delay(TimeoutError()) is None


def test_delay_from_grpc_retry_info_wins_over_pushback() -> None:
    status = to_rpc_status(RateLimitedError("slow", retry_after=4.0), "bids.marketplace")
    exc = rpc_error(status.code, *status.trailing_metadata)
    assert server_directed_delay(exc) == 4.0


class _Plain(Exception):
    """Any exception with ``.response.headers`` (duck typing, a plain dict here)."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__("plain")
        self.response = type("Response", (), {"headers": headers})()


def test_delay_from_any_exception_with_response_headers() -> None:
    assert server_directed_delay(_Plain({"Retry-After-Ms": "250"})) == 0.25
