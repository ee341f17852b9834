"""Keyset pagination for ListExecutions: newest first by (created_at, execution_id).

The opaque token codec (versioned, bound to a digest of the filters, robust to
any garbage a caller sends: INVALID_ARGUMENT INVALID_PAGE_TOKEN on
``page_token``) is the kit's :mod:`marketplace_common.paging`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from marketplace_common.paging import decode_page_token, encode_page_token, filters_digest


@dataclass(frozen=True, slots=True)
class PageCursor:
    """The last row of the previous page."""

    created_at: datetime
    execution_id: uuid.UUID


def filter_digest(*parts: object) -> str:
    """A short digest of the filters, so a token is only valid with the same filters."""
    return filters_digest("executions", {str(i): part for i, part in enumerate(parts)})


def encode_token(cursor: PageCursor, filters: str) -> str:
    """The opaque token for the page after ``cursor``."""
    return encode_page_token(cursor.created_at, cursor.execution_id, filters)


def decode_token(token: str, filters: str) -> PageCursor | None:
    """The cursor in ``token`` ("" -> None).

    Raises marketplace_common.paging.InvalidPageTokenError (INVALID_ARGUMENT)
    when the token is malformed or was made for other filters.
    """
    cursor = decode_page_token(token, filters)
    return None if cursor is None else PageCursor(cursor.created_at, cursor.id)
