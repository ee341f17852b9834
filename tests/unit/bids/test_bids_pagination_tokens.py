"""Opaque page tokens: round trip, bound to their filters, malformed ones rejected."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from marketplace_bids.domain.errors import InvalidPageTokenError
from marketplace_bids.domain.pagination import Keyset, decode_token, encode_token, filters_hash

KEYSET = Keyset(datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC), "abc")


def test_token_round_trips() -> None:
    scope = filters_hash("tasks", {"status": "PENDING"})
    assert decode_token(encode_token(KEYSET, scope), scope) == KEYSET


def test_empty_token_is_the_first_page() -> None:
    assert decode_token("", "x") is None


def test_token_for_other_filters_is_rejected() -> None:
    token = encode_token(KEYSET, filters_hash("tasks", {"status": "PENDING"}))
    with pytest.raises(InvalidPageTokenError):
        decode_token(token, filters_hash("tasks", {"status": "FAILED"}))


@pytest.mark.parametrize("token", ["!!!", "bm90IGpzb24", "e30", "WzFd"])
def test_malformed_token_is_rejected(token: str) -> None:
    with pytest.raises(InvalidPageTokenError):
        decode_token(token, "x")
