"""Opaque keyset page tokens (AIP-158), shared by every List RPC.

A token holds the last row's keyset ``(created_at, id)`` and a digest of the
filters it was issued for. Reused with other filters it is rejected, so a
client never pages through one list with another list's cursor. The token is
URL-safe base64 of a small versioned JSON object; clients must treat it as
opaque.

Decoding trusts nothing: whatever a caller sends (not base64, not JSON,
deeply nested JSON, wrong types, a naive time, a time-zone offset that
overflows when converted to UTC, an id that is not a UUID) answers
:class:`InvalidPageTokenError` (INVALID_ARGUMENT, reason INVALID_PAGE_TOKEN,
a BadRequest violation on ``page_token``), never INTERNAL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from marketplace_common.errors import FieldViolation, InvalidArgumentError

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "MAX_TOKEN_LENGTH",
    "InvalidPageTokenError",
    "PageCursor",
    "decode_page_token",
    "encode_page_token",
    "filters_digest",
    "next_page",
    "page_token_problem",
]

#: A List RPC's page size when the request names none (0), and the most it serves.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

TOKEN_VERSION = 1
#: Longer tokens are rejected before decoding (ours are about 150 characters).
MAX_TOKEN_LENGTH = 2048
PAGE_TOKEN_FIELD = "page_token"  # noqa: S105 (a field name, not a secret)


class InvalidPageTokenError(InvalidArgumentError):
    """The page token is malformed or was issued for other filters."""

    default_reason = "INVALID_PAGE_TOKEN"

    def __init__(self, description: str) -> None:
        super().__init__(
            f"invalid page_token: {description}",
            violations=[FieldViolation(PAGE_TOKEN_FIELD, description)],
        )
        self.description = description


@dataclass(frozen=True, slots=True)
class PageCursor:
    """The keyset of the last row of the previous page: ``created_at`` in UTC and the row's id."""

    created_at: datetime
    id: uuid.UUID


def filters_digest(scope: str, filters: Mapping[str, object]) -> str:
    """A short stable digest of a list's effective filters (``scope`` names the list)."""
    canonical = json.dumps(
        {"scope": scope, **{str(k): _plain(v) for k, v in filters.items()}}, sort_keys=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _plain(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def encode_page_token(created_at: datetime, row_id: uuid.UUID | str, filters: str) -> str:
    """The opaque token for the page after the row ``(created_at, row_id)``."""
    if created_at.tzinfo is None:
        raise ValueError("a page token needs a time-zone aware created_at")
    body = {
        "v": TOKEN_VERSION,
        "t": created_at.astimezone(UTC).isoformat(),
        "i": str(uuid.UUID(str(row_id))),
        "f": filters,
    }
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


T = TypeVar("T")


def next_page(
    rows: Sequence[T], size: int, filters: str, cursor: Callable[[T], PageCursor]
) -> tuple[list[T], str]:
    """A page from up to ``size + 1`` rows (the extra row only says a next page exists):
    its items and the next page's token ("" on the last page)."""
    if len(rows) <= size:
        return list(rows), ""
    items = list(rows[:size])
    last = cursor(items[-1])
    return items, encode_page_token(last.created_at, last.id, filters)


def decode_page_token(token: str, filters: str) -> PageCursor | None:
    """The cursor in ``token`` (None for an empty token: the first page).

    Raises InvalidPageTokenError when the token is malformed or was issued for
    other ``filters``.
    """
    if not token:
        return None
    cursor, issued_for = _parse(token)
    if issued_for != filters:
        raise InvalidPageTokenError("the page token was issued for different filters")
    return cursor


def page_token_problem(token: str) -> str | None:
    """Why ``token`` is no page token of any list (None when empty or well-formed).

    For a request that already failed validation: its malformed token is
    reported with the other bad fields, before any filters are known.
    """
    if not token:
        return None
    try:
        _parse(token)
    except InvalidPageTokenError as exc:
        return exc.description
    return None


def _parse(token: str) -> tuple[PageCursor, str]:
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidPageTokenError("malformed page token")
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return _cursor(body)
    except (
        binascii.Error,
        ValueError,  # also UnicodeDecodeError and json.JSONDecodeError
        KeyError,
        TypeError,
        AttributeError,
        OverflowError,  # an offset that leaves datetime's range in UTC
        RecursionError,  # JSON nested past the interpreter's limit
    ):
        raise InvalidPageTokenError("malformed page token") from None


def _cursor(body: Any) -> tuple[PageCursor, str]:
    if not isinstance(body, dict) or type(body["v"]) is not int or body["v"] != TOKEN_VERSION:
        raise ValueError("not a page token of this version")
    raw_time, raw_id, issued_for = body["t"], body["i"], body["f"]
    if not (isinstance(raw_time, str) and isinstance(raw_id, str) and isinstance(issued_for, str)):
        raise TypeError("page token fields must be strings")
    created_at = datetime.fromisoformat(raw_time)
    if created_at.tzinfo is None:
        raise ValueError("naive time in a page token")
    return PageCursor(created_at.astimezone(UTC), uuid.UUID(raw_id)), issued_for
