"""configure_logging: JSON lines, contextvars, level filter, stdlib routing, redaction."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from marketplace_common.logging import configure_logging, get_logger, is_secret_key


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_marketplace_handler", False):
            root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line]


def test_json_line_carries_event_fields_and_iso_timestamp() -> None:
    out = io.StringIO()
    configure_logging("INFO", json=True, stream=out)
    get_logger("t").info("bid.withdrawn", bid_id="b1")
    [line] = lines(out)
    assert line["event"] == "bid.withdrawn"
    assert line["bid_id"] == "b1"
    assert line["level"] == "info"
    assert line["logger"] == "t"
    assert line["timestamp"].endswith("Z")


def test_non_tty_stream_defaults_to_json() -> None:
    out = io.StringIO()
    configure_logging("INFO", stream=out)
    get_logger().info("x")
    assert lines(out)[0]["event"] == "x"


def test_console_rendering_when_forced() -> None:
    out = io.StringIO()
    configure_logging("INFO", json=False, stream=out)
    get_logger().info("hello", n=1)
    assert "hello" in out.getvalue()
    assert not out.getvalue().startswith("{")


def test_bound_contextvars_appear_on_every_line() -> None:
    out = io.StringIO()
    configure_logging("INFO", json=True, stream=out)
    structlog.contextvars.bind_contextvars(request_id="r-1")
    get_logger().info("one")
    get_logger().info("two")
    assert [line["request_id"] for line in lines(out)] == ["r-1", "r-1"]


def test_level_filter_drops_lower_levels() -> None:
    out = io.StringIO()
    configure_logging("WARNING", json=True, stream=out)
    get_logger().info("quiet")
    get_logger().warning("loud")
    assert [line["event"] for line in lines(out)] == ["loud"]


def test_stdlib_logging_goes_through_the_same_renderer() -> None:
    out = io.StringIO()
    configure_logging("INFO", json=True, stream=out)
    logging.getLogger("sqlalchemy.engine").warning("pool %s", "full")
    [line] = lines(out)
    assert line["event"] == "pool full"
    assert line["logger"] == "sqlalchemy.engine"


def test_secret_keys_are_redacted() -> None:
    out = io.StringIO()
    configure_logging("INFO", json=True, stream=out)
    get_logger().info(
        "call",
        authorization="Bearer abc",
        api_key="sk-1",
        bids_token="t",
        metadata={"password": "p"},
        page_token="cursor",
    )
    [line] = lines(out)
    assert line["authorization"] == "[REDACTED]"
    assert line["api_key"] == "[REDACTED]"
    assert line["bids_token"] == "[REDACTED]"
    assert line["metadata"] == {"password": "[REDACTED]"}
    assert line["page_token"] == "cursor"


def test_url_passwords_are_masked() -> None:
    out = io.StringIO()
    configure_logging("INFO", json=True, stream=out)
    get_logger().info("db", url="postgresql://app:hunter2@db:5432/x")
    assert "hunter2" not in out.getvalue()


def test_exceptions_are_rendered_as_text_in_json() -> None:
    out = io.StringIO()
    configure_logging("INFO", json=True, stream=out)
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger().exception("failed")
    [line] = lines(out)
    assert "ValueError: boom" in line["exception"]


@pytest.mark.parametrize("key", ["Authorization", "TOKEN", "llm_api_key", "db_password"])
def test_is_secret_key(key: str) -> None:
    assert is_secret_key(key)
