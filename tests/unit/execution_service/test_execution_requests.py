"""Edge validation and page tokens of the execution service (pure domain code)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from marketplace_common.errors import InvalidArgumentError
from marketplace_common.paging import PageCursor, decode_page_token, encode_page_token
from marketplace_execution.domain.requests import (
    CompleteRequest,
    ListRequest,
    SubmitRequest,
    parse,
)


def submit(**fields: object) -> SubmitRequest:
    data: dict[str, object] = {"request_id": str(uuid.uuid4()), "task_id": str(uuid.uuid4())}
    data.update(fields)
    return parse(SubmitRequest, data)


def test_zero_max_attempts_means_the_default() -> None:
    assert submit(max_attempts=0).attempts_budget == 3


def test_every_invalid_field_is_listed() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse(SubmitRequest, {"request_id": "x", "task_id": "y", "max_attempts": 11})
    fields = {v.field for v in caught.value.violations}
    assert fields == {"request_id", "task_id", "max_attempts"}


def test_output_schema_must_be_a_valid_json_schema() -> None:
    with pytest.raises(InvalidArgumentError):
        submit(output_schema=json.dumps({"type": 5}))
    ok = submit(output_schema=json.dumps({"type": "object"}))
    assert ok.schema_dict == {"type": "object"}


def test_empty_output_schema_means_none() -> None:
    assert submit(output_schema="").output_schema is None


def test_fingerprint_ignores_request_id_but_not_the_body_nor_the_caller() -> None:
    task = str(uuid.uuid4())
    a, b = submit(task_id=task), submit(task_id=task)
    assert a.fingerprint("agent:agent-7") == b.fingerprint("agent:agent-7")
    other_body = submit(task_id=task, prompt="other").fingerprint("agent:agent-7")
    assert other_body != a.fingerprint("agent:agent-7")
    assert a.fingerprint("agent:agent-8") != a.fingerprint("agent:agent-7")


def test_complete_needs_a_prompt() -> None:
    with pytest.raises(InvalidArgumentError):
        parse(CompleteRequest, {"prompt": ""})


def test_page_size_is_capped_and_negative_is_invalid() -> None:
    assert parse(ListRequest, {"page_size": 10_000}).limit == 500
    assert parse(ListRequest, {"page_size": 0}).limit == 50
    with pytest.raises(InvalidArgumentError):
        parse(ListRequest, {"page_size": -1})


def test_page_token_round_trips_only_with_the_same_filters() -> None:
    cursor = PageCursor(datetime.now(UTC), uuid.uuid4())
    token = encode_page_token(cursor.created_at, cursor.id, "f1")
    assert decode_page_token(token, "f1") == cursor
    with pytest.raises(InvalidArgumentError):
        decode_page_token(token, "f2")
    with pytest.raises(InvalidArgumentError):
        decode_page_token("garbage!", "f1")
