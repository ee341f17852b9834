"""A failed call on stderr: code, ErrorInfo reason, every field violation; and the exit code.

The exit code tells the kind of failure, so a script can branch on it
(docs/marketctl.md has the table).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]


class Exit(IntEnum):
    """marketctl's exit codes."""

    OK = 0
    ERROR = 1  # internal, unknown, unimplemented: a bug or an outage to report
    USAGE = 2  # bad flags or arguments (before any call)
    INVALID = 3  # INVALID_ARGUMENT, OUT_OF_RANGE: fix the input
    NOT_FOUND = 4  # NOT_FOUND
    CONFLICT = 5  # ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED: the state forbids it
    UNAVAILABLE = 6  # UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, CANCELLED: retry
    DENIED = 7  # UNAUTHENTICATED, PERMISSION_DENIED
    NOT_SUCCEEDED = 8  # executions watch: the execution ended FAILED or CANCELLED


_KINDS: dict[grpc.StatusCode, Exit] = {
    grpc.StatusCode.INVALID_ARGUMENT: Exit.INVALID,
    grpc.StatusCode.OUT_OF_RANGE: Exit.INVALID,
    grpc.StatusCode.NOT_FOUND: Exit.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: Exit.CONFLICT,
    grpc.StatusCode.FAILED_PRECONDITION: Exit.CONFLICT,
    grpc.StatusCode.ABORTED: Exit.CONFLICT,
    grpc.StatusCode.UNAVAILABLE: Exit.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: Exit.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Exit.UNAVAILABLE,
    grpc.StatusCode.CANCELLED: Exit.UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED: Exit.DENIED,
    grpc.StatusCode.PERMISSION_DENIED: Exit.DENIED,
}

STATUS_DETAILS_KEY = "grpc-status-details-bin"


def exit_code(code: grpc.StatusCode) -> Exit:
    """The exit code for a gRPC status code."""
    return _KINDS.get(code, Exit.ERROR)


@dataclass
class CallError:
    """What a failed call said, decoded from its status and google.rpc details."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[tuple[str, str]] = field(default_factory=list)
    retry_after: float | None = None

    @classmethod
    def from_rpc_error(cls, exc: grpc.RpcError) -> CallError:
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        message = (exc.details() if isinstance(exc, grpc.Call) else str(exc)) or ""
        error = cls(code, message)
        trailers: Any = exc.trailing_metadata() if isinstance(exc, grpc.Call) else None
        for item in trailers or ():
            key: str = item[0]
            value: str | bytes = item[1]
            if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
                error._add_details(value)
        return error

    def _add_details(self, raw: bytes) -> None:
        status = status_pb2.Status.FromString(raw)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                if not self.reason:
                    self.reason, self.domain = info.reason, info.domain
                    self.metadata = dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                self.violations += [(v.field, v.description) for v in bad.field_violations]
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                self.retry_after = retry.retry_delay.ToTimedelta().total_seconds()

    def as_json(self) -> str:
        return json.dumps(
            {
                "code": self.code.name,
                "message": self.message,
                "reason": self.reason,
                "domain": self.domain,
                "metadata": self.metadata,
                "field_violations": [{"field": f, "description": d} for f, d in self.violations],
                "retry_after_seconds": self.retry_after,
            }
        )

    def lines(self) -> list[str]:
        out = [f"error: {self.code.name}: {self.message}"]
        if self.reason:
            meta = ", ".join(f"{k}={v}" for k, v in sorted(self.metadata.items()))
            out.append(f"  reason: {self.reason} ({self.domain}{'; ' + meta if meta else ''})")
        out += [f"  field {name}: {description}" for name, description in self.violations]
        if self.retry_after is not None:
            out.append(f"  retry after: {self.retry_after:g}s")
        return out

    def report(self, *, as_json: bool) -> Exit:
        """Print to stderr; return the exit code."""
        text = self.as_json() if as_json else "\n".join(self.lines())
        print(text, file=sys.stderr)
        return exit_code(self.code)
