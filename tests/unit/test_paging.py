"""The shared page-token codec: round trip, bound to its filters, every garbage input rejected."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from marketplace_common.errors import ErrorType
from marketplace_common.paging import (
    MAX_TOKEN_LENGTH,
    InvalidPageTokenError,
    PageCursor,
    decode_page_token,
    encode_page_token,
    filters_digest,
    page_token_problem,
)

ROW_ID = uuid.UUID("8f1c2f0e-2b7a-4c1e-9a37-1d2f3e4a5b6c")
CREATED = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
FILTERS = filters_digest("tasks", {"status": "PENDING", "client_email": None})


def _token(body: object) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _body(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {"v": 1, "t": CREATED.isoformat(), "i": str(ROW_ID), "f": FILTERS}
    body.update(changes)
    return body


def test_token_round_trips() -> None:
    token = encode_page_token(CREATED, ROW_ID, FILTERS)
    assert decode_page_token(token, FILTERS) == PageCursor(CREATED, ROW_ID)


def test_string_id_round_trips_as_a_uuid() -> None:
    token = encode_page_token(CREATED, str(ROW_ID).upper(), FILTERS)
    assert decode_page_token(token, FILTERS) == PageCursor(CREATED, ROW_ID)


def test_decoded_time_is_utc() -> None:
    plus_two = CREATED.astimezone(timezone(timedelta(hours=2)))
    token = _token(_body(t=plus_two.isoformat()))
    cursor = decode_page_token(token, FILTERS)
    assert cursor is not None
    assert (cursor.created_at, cursor.created_at.utcoffset()) == (CREATED, timedelta(0))


def test_token_is_url_safe_without_padding() -> None:
    token = encode_page_token(CREATED, ROW_ID, FILTERS)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_empty_token_is_the_first_page() -> None:
    assert decode_page_token("", FILTERS) is None


def test_naive_time_cannot_be_encoded() -> None:
    with pytest.raises(ValueError):
        encode_page_token(datetime(2024, 1, 1), ROW_ID, FILTERS)


def test_digest_depends_on_scope_and_values_not_order() -> None:
    a = filters_digest("tasks", {"status": "PENDING", "client_email": "a@example.com"})
    b = filters_digest("tasks", {"client_email": "a@example.com", "status": "PENDING"})
    assert a == b
    assert a != filters_digest("bids", {"status": "PENDING", "client_email": "a@example.com"})
    assert a != filters_digest("tasks", {"status": "FAILED", "client_email": "a@example.com"})
    assert filters_digest("t", {"x": None}) != filters_digest("t", {"x": "None"})


def test_token_for_other_filters_is_invalid_page_token() -> None:
    token = encode_page_token(CREATED, ROW_ID, FILTERS)
    with pytest.raises(InvalidPageTokenError) as caught:
        decode_page_token(token, filters_digest("tasks", {"status": "FAILED"}))
    assert "different filters" in caught.value.message


def test_error_is_invalid_argument_with_a_page_token_violation() -> None:
    with pytest.raises(InvalidPageTokenError) as caught:
        decode_page_token("!!!", FILTERS)
    err = caught.value
    assert (err.reason, err.error_type) == ("INVALID_PAGE_TOKEN", ErrorType.PERMANENT)
    assert [v.field for v in err.violations] == ["page_token"]


GARBAGE: dict[str, str] = {
    "not-base64": "!!!",
    "bad-padding": "a",
    "non-ascii": "tökén",
    "not-json": _token(b"not json"),
    "not-utf8": _token(b"\xff\xfe\xfd"),
    "json-list": _token([1, 2]),
    "json-string": _token("x"),
    "json-null": _token(None),
    "json-number": _token(5),
    "empty-object": _token({}),
    "deep-array": _token(b"[" * 5000),
    "deep-object": _token(b'{"t":' * 5000),
    "no-version": _token({k: v for k, v in _body().items() if k != "v"}),
    "other-version": _token(_body(v=2)),
    "bool-version": _token(_body(v=True)),
    "string-version": _token(_body(v="1")),
    "no-time": _token({k: v for k, v in _body().items() if k != "t"}),
    "int-time": _token(_body(t=5)),
    "bad-time": _token(_body(t="yesterday")),
    "naive-time": _token(_body(t="2024-01-01T00:00:00")),
    "min-time-plus-14h": _token(_body(t="0001-01-01T00:00:00+14:00")),
    "max-time-minus-14h": _token(_body(t="9999-12-31T23:59:59-14:00")),
    "no-id": _token({k: v for k, v in _body().items() if k != "i"}),
    "int-id": _token(_body(i=5)),
    "list-id": _token(_body(i=[1])),
    "null-id": _token(_body(i=None)),
    "not-uuid-id": _token(_body(i="abc")),
    "nul-id": _token(_body(i="8f1c2f0e\x00")),
    "no-filters": _token({k: v for k, v in _body().items() if k != "f"}),
    "int-filters": _token(_body(f=5)),
    "too-long": "A" * (MAX_TOKEN_LENGTH + 1),
}


@pytest.mark.parametrize("token", list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_token_is_invalid_page_token(token: str) -> None:
    with pytest.raises(InvalidPageTokenError):
        decode_page_token(token, FILTERS)


def test_page_token_problem_judges_the_form_alone() -> None:
    # For a request that already failed validation: no filters are known yet.
    assert page_token_problem("") is None
    assert page_token_problem(encode_page_token(CREATED, ROW_ID, "other filters")) is None
    assert page_token_problem("!!!") == "malformed page token"
    assert page_token_problem(_token(_body(v=2))) == "malformed page token"
    assert page_token_problem("A" * (MAX_TOKEN_LENGTH + 1)) == "malformed page token"
