"""Text that leaves the attempt loop: what the databases and BidService will accept.

A model's answer or a provider's error message can hold anything. PostgreSQL
refuses NUL in text (SQLSTATE 22021) and a lone surrogate cannot be encoded as
UTF-8 at all, so an answer carrying either could never be stored or reported,
and would strand its task in PROCESSING. BidService also refuses a
CompleteTask result over ``MAX_RESULT_CHARS``. It accepts any other character
in machine text, but a FailTask message is for people to read, so control
characters in it become spaces.
"""

from __future__ import annotations

import re

MAX_RESULT_CHARS = 100_000
"""The longest result BidService's CompleteTask accepts (bids ``MAX_RESULT``)."""

MAX_REPORT_MESSAGE_CHARS = 1_000
"""FailTask messages are cut to this (BidService accepts up to 10,000)."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def storable(text: str) -> str:
    """``text`` without NUL characters and with lone surrogates replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text.replace("\x00", ""))


def report_message(text: str, limit: int = MAX_REPORT_MESSAGE_CHARS) -> str:
    """A message BidService accepts: storable, control characters (but tab and
    newlines) as spaces, at most ``limit`` characters."""
    cleaned = _CONTROL.sub(" ", storable(text))
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def has_invalid_text(text: str) -> bool:
    """True when ``text`` holds a NUL or a lone surrogate (neither database stores it)."""
    return storable(text) != text
