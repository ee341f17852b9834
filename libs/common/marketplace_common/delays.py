"""Server-directed retry delays: how long the failed call's server asked us to wait.

``classify.as_agent_error`` keeps such a delay as ``AgentError.retry_after``, where
``retrying.Backoff`` lets it win over backoff.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import grpc

from marketplace_common.errors import AgentError
from marketplace_common.status import from_rpc_error

__all__ = ["server_directed_delay"]


def _header_delay(headers: Any, now: datetime | None) -> float | None:
    # Header names are case-insensitive; a plain dict may spell them any way.
    lowered = {str(k).lower(): str(v).strip() for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        return _seconds(lowered["retry-after-ms"], scale=1000)
    value = lowered.get("retry-after")
    if value is None:
        return None
    if value.replace(".", "", 1).lstrip("+-").isdigit():
        return _seconds(value, scale=1)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _seconds(text: str, *, scale: float) -> float | None:
    try:
        value = float(text) / scale
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def server_directed_delay(exc: BaseException, *, now: datetime | None = None) -> float | None:
    """Seconds the failed call's server asked us to wait, or None; never raises.

    Sources, first match wins: ``AgentError.retry_after``; a gRPC error's
    RetryInfo, else its ``grpc-retry-pushback-ms``; HTTP headers
    ``retry-after-ms`` then ``Retry-After`` (seconds or an HTTP date, measured
    from ``now``) of any exception with ``.response.headers`` (the openai
    client's ``APIStatusError``, httpx's ``HTTPStatusError``).
    """
    try:
        if isinstance(exc, AgentError):
            return exc.retry_after
        if isinstance(exc, grpc.RpcError):
            return from_rpc_error(exc).retry_after
        headers = getattr(getattr(exc, "response", None), "headers", None)
        if headers is not None and hasattr(headers, "items"):
            return _header_delay(headers, now)
    except Exception:
        return None
    return None
