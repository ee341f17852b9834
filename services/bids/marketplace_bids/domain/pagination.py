"""Keyset pagination for the bids lists, on the kit's opaque page tokens (AIP-158).

The token codec (versioned, bound to a digest of the filters, robust to any
garbage a caller sends) lives in :mod:`marketplace_common.paging`; this module
adapts it to the bids domain's string ids and :class:`Page`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from marketplace_common.paging import decode_page_token, encode_page_token, filters_digest

from marketplace_bids.domain.models import Page

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Keyset:
    """The position after which the next page starts: ``created_at`` and the row's UUID."""

    created_at: datetime
    id: str


def filters_hash(scope: str, filters: Mapping[str, object]) -> str:
    """A short stable hash of a list's effective filters."""
    return filters_digest(scope, filters)


def encode_token(keyset: Keyset, filters: str) -> str:
    """The opaque token for the page after ``keyset``."""
    return encode_page_token(keyset.created_at, keyset.id, filters)


def decode_token(token: str, filters: str) -> Keyset | None:
    """The keyset in ``token`` (None for an empty token), checked against ``filters``.

    Raises marketplace_common.paging.InvalidPageTokenError (INVALID_PAGE_TOKEN).
    """
    cursor = decode_page_token(token, filters)
    return None if cursor is None else Keyset(cursor.created_at, str(cursor.id))


def make_page(rows: list[T], size: int, filters: str, key: Callable[[T], Keyset]) -> Page[T]:
    """A page from up to ``size + 1`` rows: the extra row only says there is a next page."""
    if len(rows) <= size:
        return Page[T](items=rows)
    items = rows[:size]
    return Page[T](items=items, next_page_token=encode_token(key(items[-1]), filters))
