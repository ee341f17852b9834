"""Opaque keyset page tokens (AIP-158): newest first by (created_at, execution_id)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from marketplace_common.errors import FieldViolation, InvalidArgumentError


@dataclass(frozen=True, slots=True)
class PageCursor:
    """The last row of the previous page."""

    created_at: datetime
    execution_id: uuid.UUID


def filter_digest(*parts: object) -> str:
    """A short digest of the filters, so a token is only valid with the same filters."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def encode_token(cursor: PageCursor, filters: str) -> str:
    """The opaque token for the page after ``cursor``."""
    body = {"c": cursor.created_at.isoformat(), "i": str(cursor.execution_id), "f": filters}
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def decode_token(token: str, filters: str) -> PageCursor | None:
    """The cursor in ``token`` ("" -> None).

    INVALID_ARGUMENT when the token is malformed or was made for other filters.
    """
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        cursor = PageCursor(datetime.fromisoformat(body["c"]), uuid.UUID(body["i"]))
        same_filters = body["f"] == filters
    except (binascii.Error, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        same_filters = False
        cursor = None
    if cursor is None or not same_filters or cursor.created_at.tzinfo is None:
        raise InvalidArgumentError(
            "page_token is malformed or belongs to other filters",
            violations=[FieldViolation("page_token", "not a token of this query")],
        )
    return cursor
