"""The bids proto comments state the limits the code enforces (clients read the proto)."""

from __future__ import annotations

import re
from pathlib import Path

from marketplace_bids.domain.values import MAX_RESULT, MAX_TEXT
from marketplace_common.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

PROTO = Path(__file__).resolve().parents[3] / "proto" / "marketplace" / "bids" / "v1" / "bids.proto"


def _comments_of(field: str) -> list[str]:
    """The comment block right above every declaration of ``field``."""
    lines = PROTO.read_text(encoding="utf-8").splitlines()
    found = []
    for i, line in enumerate(lines):
        if re.match(rf"\s*\w+ {field} = \d+;", line):
            block: list[str] = []
            j = i - 1
            while j >= 0 and lines[j].strip().startswith("//"):
                block.insert(0, lines[j].strip().removeprefix("//").strip())
                j -= 1
            found.append(" ".join(block))
    return found


def test_every_page_size_documents_default_and_coercion() -> None:
    comments = _comments_of("page_size")
    assert len(comments) == 4  # ListTasks, ListBids, ListBidEvents, ListTaskEvents
    for comment in comments:
        assert f"default ({DEFAULT_PAGE_SIZE})" in comment
        assert f"above {MAX_PAGE_SIZE} are coerced to {MAX_PAGE_SIZE}" in comment


def test_result_and_message_document_their_bounds() -> None:
    (result,) = _comments_of("result")[-1:]
    assert f"{MAX_RESULT:,} characters" in result
    assert "NUL" in result
    (message,) = _comments_of("message")
    assert f"{MAX_TEXT:,} characters" in message
    assert "NUL" in message
