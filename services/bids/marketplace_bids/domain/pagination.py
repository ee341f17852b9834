"""Opaque keyset page tokens (AIP-158).

A token holds the last row's keyset ``(created_at, id)`` and a hash of the
filters it was issued for; reused with other filters it is rejected, so a
client can never page through one list with another list's cursor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from marketplace_bids.domain.errors import InvalidPageTokenError
from marketplace_bids.domain.models import Page

T = TypeVar("T")

_VERSION = 1


@dataclass(frozen=True, slots=True)
class Keyset:
    """The position after which the next page starts."""

    created_at: datetime
    id: str


def filters_hash(scope: str, filters: Mapping[str, object]) -> str:
    """A short stable hash of a list's effective filters."""
    canonical = json.dumps(
        {"scope": scope, **{k: _plain(v) for k, v in filters.items()}}, sort_keys=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    return None if value is None else str(value)


def encode_token(keyset: Keyset, filters: str) -> str:
    """The opaque token for the page after ``keyset``."""
    body = {"v": _VERSION, "t": keyset.created_at.isoformat(), "i": keyset.id, "f": filters}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, filters: str) -> Keyset | None:
    """The keyset in ``token`` (None for an empty token), checked against ``filters``."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        keyset = Keyset(datetime.fromisoformat(body["t"]), str(body["i"]))
        version, issued_for = body["v"], body["f"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        raise InvalidPageTokenError("malformed page token") from None
    if version != _VERSION or keyset.created_at.tzinfo is None:
        raise InvalidPageTokenError("malformed page token")
    if issued_for != filters:
        raise InvalidPageTokenError("the page token was issued for different filters")
    return keyset


def make_page(rows: list[T], size: int, filters: str, key: Callable[[T], Keyset]) -> Page[T]:
    """A page from up to ``size + 1`` rows: the extra row only says there is a next page."""
    if len(rows) <= size:
        return Page[T](items=rows)
    items = rows[:size]
    return Page[T](items=items, next_page_token=encode_token(key(items[-1]), filters))
