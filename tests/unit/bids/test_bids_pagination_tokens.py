"""Page tokens as the bids lists use them: round trip, bound to their filters, malformed
ones rejected. The codec is the kit's (tests/unit/test_paging.py has the rest)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest
from marketplace_common.paging import (
    InvalidPageTokenError,
    PageCursor,
    decode_page_token,
    encode_page_token,
    filters_digest,
)

KEYSET = PageCursor(
    datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
    uuid.UUID("8f1c2f0e-2b7a-4c1e-9a37-1d2f3e4a5b6c"),
)


def test_token_round_trips() -> None:
    scope = filters_digest("tasks", {"status": "PENDING"})
    assert (
        decode_page_token(encode_page_token(KEYSET.created_at, KEYSET.id, scope), scope) == KEYSET
    )


def test_empty_token_is_the_first_page() -> None:
    assert decode_page_token("", "x") is None


def test_token_for_other_filters_is_rejected() -> None:
    token = encode_page_token(
        KEYSET.created_at, KEYSET.id, filters_digest("tasks", {"status": "PENDING"})
    )
    with pytest.raises(InvalidPageTokenError):
        decode_page_token(token, filters_digest("tasks", {"status": "FAILED"}))


def _forged(time: str, ident: str = str(KEYSET.id)) -> str:
    body = {"v": 1, "t": time, "i": ident, "f": "x"}
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "!!!",
        "bm90IGpzb24",
        "e30",
        "WzFd",
        _forged("0001-01-01T00:00:00+14:00"),
        _forged("9999-12-31T23:59:59-14:00"),
        _forged("2024-01-01T00:00:00+00:00", ident="abc"),
        _forged("2024-01-01T00:00:00+00:00", ident="\x00"),
    ],
    ids=[
        "not-base64",
        "not-json",
        "empty-object",
        "list",
        "overflow-low",
        "overflow-high",
        "id-not-uuid",
        "id-nul",
    ],
)
def test_malformed_token_is_rejected(token: str) -> None:
    with pytest.raises(InvalidPageTokenError):
        decode_page_token(token, "x")
