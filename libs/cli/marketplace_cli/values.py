"""Turning what a person types into proto values, and proto values back into short text."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from marketplace.common.v1 import common_pb2

NANOS = 1_000_000_000
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class ValueProblem(ValueError):
    """A value the user typed that cannot be turned into the field it fills."""


def money(amount: str, currency: str) -> common_pb2.Money:
    """``12.50`` and ``USD`` as google.type.Money-like units and nanos (truncating no digit)."""
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise ValueProblem(f"not a decimal amount: {amount!r}") from None
    if not value.is_finite():
        raise ValueProblem(f"not a finite amount: {amount!r}")
    units = int(value)
    nanos_exact = (value - units) * NANOS
    if nanos_exact != nanos_exact.to_integral_value():
        raise ValueProblem(f"more than 9 decimal places: {amount!r}")
    return common_pb2.Money(currency_code=currency, units=units, nanos=int(nanos_exact))


def money_text(value: common_pb2.Money) -> str:
    amount = Decimal(value.units) + Decimal(value.nanos) / NANOS
    return f"{amount.normalize():f} {value.currency_code}".strip()


def duration(text: str) -> Duration:
    """``90``, ``90s``, ``15m``, ``24h``, ``7d`` or ``500ms`` as a Duration."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueProblem(f"not a duration (like 90s, 15m, 24h, 7d): {text!r}")
    seconds = Decimal(match.group(1)) * Decimal(str(_UNIT_SECONDS[match.group(2)]))
    out = Duration()
    out.seconds = int(seconds)
    out.nanos = int((seconds - int(seconds)) * NANOS)
    return out


def timestamp(text: str) -> Timestamp:
    """An ISO 8601 instant (``2026-11-29T12:00:00Z``; no offset means UTC)."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueProblem(f"not an ISO 8601 time: {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    out = Timestamp()
    out.FromDatetime(parsed)
    return out


def enum_value(enum: Any, prefix: str, text: str) -> int:
    """``pending`` (or ``TASK_STATUS_PENDING``) as the value of the proto enum ``enum``."""
    name = text.strip().upper()
    if not name.startswith(prefix):
        name = prefix + name
    try:
        return int(enum.Value(name))
    except ValueError:
        choices = ", ".join(
            n.removeprefix(prefix).lower()
            for n in list(enum.keys())
            if not n.endswith("UNSPECIFIED")
        )
        raise ValueProblem(f"{text!r} is none of: {choices}") from None


def enum_text(enum: Any, prefix: str, value: int) -> str:
    """The short name of a proto enum value (``PENDING``), empty for UNSPECIFIED."""
    try:
        name: str = enum.Name(value)
    except ValueError:
        return str(value)
    short = name.removeprefix(prefix)
    return "" if short == "UNSPECIFIED" else short


def when(value: Timestamp) -> str:
    if value.seconds == 0 and value.nanos == 0:
        return ""
    return value.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def seconds(value: Duration) -> str:
    total = value.seconds + value.nanos / NANOS
    return "" if total == 0 else f"{total:g}s"
