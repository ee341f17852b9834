"""The one table between our errors and gRPC status, in both directions.

Server side: ``to_rpc_status`` turns an ``AgentError`` into a ``grpc.Status``
whose trailing metadata carries a ``google.rpc.Status`` (``grpc-status-details-bin``)
with exactly one ``ErrorInfo`` (reason, domain, ``metadata.errorType``), a
``RetryInfo`` for transient errors and a ``BadRequest`` listing every
violation. ``abort_with_error`` ends an RPC with it (grpc.aio contexts have no
``abort_with_status``).

Client side: ``from_rpc_error`` rebuilds the error from a failed call, so the
type, reason, retry delay and violations survive the round trip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from marketplace_common.errors import (
    STATUS_FOR_KIND,
    AgentError,
    AlreadyExistsError,
    ConflictError,
    DataLossError,
    DeadlineExceededError,
    ErrorType,
    FailedPreconditionError,
    FatalError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    LLMFixableError,
    LLMOutputInvalidError,
    NotFoundError,
    OutOfRangeError,
    PermanentError,
    PermissionDeniedError,
    RateLimitedError,
    TransientError,
    UnauthenticatedError,
    UnavailableError,
    status_name,
)

__all__ = [
    "CODE_FOR_KIND",
    "DEFAULT_RETRY_DELAY",
    "DETAILS_METADATA_KEY",
    "ERROR_TYPE_METADATA_KEY",
    "RETRY_PUSHBACK_METADATA_KEY",
    "RpcStatus",
    "abort_with_error",
    "code_for",
    "from_rpc_error",
    "to_rpc_status",
    "to_status_proto",
]

ERROR_TYPE_METADATA_KEY = "errorType"
"""ErrorInfo metadata key holding the ErrorType name."""

DETAILS_METADATA_KEY = "grpc-status-details-bin"
"""Trailing metadata key carrying the serialized google.rpc.Status."""

RETRY_PUSHBACK_METADATA_KEY = "grpc-retry-pushback-ms"
"""Trailing metadata key gRPC's own retry machinery reads (gRFC A6), in milliseconds."""

DEFAULT_RETRY_DELAY = 1.0
"""RetryInfo delay (seconds) sent for a transient error that names none."""

_S = grpc.StatusCode

CODE_FOR_KIND: Mapping[type[AgentError], grpc.StatusCode] = MappingProxyType(
    {kind: grpc.StatusCode[name] for kind, name in STATUS_FOR_KIND.items()}
)
"""``errors.STATUS_FOR_KIND`` as codes: the kind of an error decides its code."""

# Client side: which kind to rebuild for a code. FAILED_PRECONDITION is refined
# by type and reason in _kind_for.
_KIND_FOR_CODE: Mapping[grpc.StatusCode, type[AgentError]] = MappingProxyType(
    {
        _S.UNAVAILABLE: UnavailableError,
        _S.ABORTED: ConflictError,
        _S.RESOURCE_EXHAUSTED: RateLimitedError,
        _S.DEADLINE_EXCEEDED: DeadlineExceededError,
        _S.INVALID_ARGUMENT: InvalidArgumentError,
        _S.NOT_FOUND: NotFoundError,
        _S.ALREADY_EXISTS: AlreadyExistsError,
        _S.FAILED_PRECONDITION: FailedPreconditionError,
        _S.UNAUTHENTICATED: UnauthenticatedError,
        _S.PERMISSION_DENIED: PermissionDeniedError,
        _S.OUT_OF_RANGE: OutOfRangeError,
        _S.INTERNAL: InternalError,
        _S.DATA_LOSS: DataLossError,
        _S.UNKNOWN: InternalError,
    }
)

_FATAL_CODES = frozenset({_S.INTERNAL, _S.DATA_LOSS, _S.UNKNOWN})
_SAFE_FATAL_MESSAGES: Mapping[grpc.StatusCode, str] = MappingProxyType(
    {_S.DATA_LOSS: "Data loss or corruption detected."}
)
_SAFE_FATAL_MESSAGE = "Internal error."
_LLM_OUTPUT_INVALID = "LLM_OUTPUT_INVALID"


@dataclass(frozen=True, slots=True)
class RpcStatus(grpc.Status):
    """A concrete ``grpc.Status``: code, message (``details``) and trailing metadata."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def code_for(err: AgentError) -> grpc.StatusCode:
    """The status code for an error (``errors.status_name``)."""
    return grpc.StatusCode[status_name(err)]


def _safe_message(err: AgentError, code: grpc.StatusCode) -> str:
    # FATAL errors may carry internals (hashes, SQL, state); the wire gets a generic text.
    if err.error_type is ErrorType.FATAL or code in _FATAL_CODES:
        return _SAFE_FATAL_MESSAGES.get(code, _SAFE_FATAL_MESSAGE)
    return err.message


def _transient_delay(err: AgentError) -> float:
    delay = err.retry_after
    if delay is None or not math.isfinite(delay) or delay < 0:
        return DEFAULT_RETRY_DELAY
    return delay


def to_status_proto(err: AgentError, domain: str) -> status_pb2.Status:
    """The ``google.rpc.Status`` for an error (see the module docstring for its details)."""
    code = code_for(err)
    status = status_pb2.Status(code=code.value[0], message=_safe_message(err, code))
    metadata = {**err.metadata, ERROR_TYPE_METADATA_KEY: err.error_type.value}
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=domain, metadata=metadata)
    status.details.add().Pack(info)
    if err.error_type is ErrorType.TRANSIENT:
        retry_info = error_details_pb2.RetryInfo()
        retry_info.retry_delay.FromNanoseconds(round(_transient_delay(err) * 1e9))
        status.details.add().Pack(retry_info)
    if err.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in err.violations
            ]
        )
        status.details.add().Pack(bad_request)
    return status


def to_rpc_status(err: AgentError, domain: str) -> RpcStatus:
    """The ``grpc.Status`` to end an RPC with for ``err``.

    ``domain`` is the ErrorInfo domain (``bids.marketplace`` or
    ``execution.marketplace``). A transient error that names its own
    ``retry_after`` also sends ``grpc-retry-pushback-ms``, so a channel's
    service-config retry policy waits as long as the server asked.
    """
    status = rpc_status.to_status(to_status_proto(err, domain))
    trailing: tuple[tuple[str, str | bytes], ...] = tuple(status.trailing_metadata)
    if err.error_type is ErrorType.TRANSIENT and err.retry_after is not None:
        pushback = str(round(_transient_delay(err) * 1000))
        trailing = (*trailing, (RETRY_PUSHBACK_METADATA_KEY, pushback))
    return RpcStatus(status.code, status.details, trailing)


async def abort_with_error(
    context: grpc.aio.ServicerContext[Any, Any], err: AgentError, domain: str
) -> NoReturn:
    """End the current RPC with the status for ``err`` (never returns)."""
    status = to_rpc_status(err, domain)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("context.abort returned")  # pragma: no cover


# --- client side -------------------------------------------------------------


@dataclass(slots=True)
class _Details:
    info: error_details_pb2.ErrorInfo | None = None
    retry_delay: float | None = None
    violations: tuple[FieldViolation, ...] = ()
    pushback: float | None = None


def _call_attr(exc: object, name: str) -> Any:
    method = getattr(exc, name, None)
    if not callable(method):
        return None
    try:
        return method()
    except Exception:
        return None


def _parse_details(exc: object) -> _Details:
    found = _Details()
    for item in _call_attr(exc, "trailing_metadata") or ():
        if item[0] == RETRY_PUSHBACK_METADATA_KEY:
            found.pushback = _parse_pushback(item[1])
    try:
        # None without details; raises on undecodable details, or on a code or
        # message that contradicts them: then the code alone speaks.
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    except Exception:
        status = None
    if status is not None:
        _read_status_details(status, found)
    return found


def _parse_pushback(value: str | bytes) -> float | None:
    # gRFC A6: a negative or unparsable pushback asks not to retry; we simply
    # ignore it (the error type still decides) rather than invent a rule.
    try:
        ms = int(value)
    except ValueError:
        return None
    return ms / 1000 if ms >= 0 else None


def _read_status_details(status: status_pb2.Status, found: _Details) -> None:
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR) and found.info is None:
            found.info = error_details_pb2.ErrorInfo()
            detail.Unpack(found.info)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry_info = error_details_pb2.RetryInfo()
            detail.Unpack(retry_info)
            found.retry_delay = retry_info.retry_delay.ToNanoseconds() / 1e9
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.violations += tuple(
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            )


def _client_error_type(
    code: grpc.StatusCode, has_retry_info: bool, deadline_remaining: float | None
) -> ErrorType:
    if code in (_S.UNAVAILABLE, _S.ABORTED):
        return ErrorType.TRANSIENT
    if code is _S.DEADLINE_EXCEEDED:
        time_left = deadline_remaining is None or deadline_remaining > 0
        return ErrorType.TRANSIENT if time_left else ErrorType.PERMANENT
    if code is _S.RESOURCE_EXHAUSTED and has_retry_info:
        return ErrorType.TRANSIENT
    if code in _FATAL_CODES:
        return ErrorType.FATAL
    return ErrorType.PERMANENT


def _kind_for(code: grpc.StatusCode, error_type: ErrorType, reason: str) -> type[AgentError]:
    if code is _S.FAILED_PRECONDITION:
        if error_type is ErrorType.LLM_FIXABLE:
            return LLMFixableError
        if reason == _LLM_OUTPUT_INVALID:
            return LLMOutputInvalidError
    kind = _KIND_FOR_CODE.get(code)
    if kind is not None:
        return kind
    # CANCELLED, UNIMPLEMENTED, OK (misused) ...: no kind of ours, keep the type.
    return {
        ErrorType.TRANSIENT: TransientError,
        ErrorType.PERMANENT: PermanentError,
        ErrorType.FATAL: FatalError,
        ErrorType.LLM_FIXABLE: LLMFixableError,
    }[error_type]


def _wire_error_type(info: error_details_pb2.ErrorInfo | None) -> ErrorType | None:
    if info is None:
        return None
    try:
        return ErrorType(info.metadata.get(ERROR_TYPE_METADATA_KEY, ""))
    except ValueError:
        return None


def from_rpc_error(exc: grpc.RpcError, *, deadline_remaining: float | None = None) -> AgentError:
    """Rebuild an ``AgentError`` from a failed call (client side); never raises.

    The kind comes from the status code; ``ErrorInfo.metadata.errorType``
    decides the type when present, else the client rules of docs/errors.md (with
    DEADLINE_EXCEEDED transient only while ``deadline_remaining``, the
    caller's own time left in seconds, is unknown or positive). The reason
    is ErrorInfo's (else the code name); ``retry_after`` comes from RetryInfo,
    else ``grpc-retry-pushback-ms``; violations from BadRequest. ErrorInfo's
    other metadata is kept in ``metadata``.
    """
    code = _call_attr(exc, "code")
    if not isinstance(code, grpc.StatusCode):
        code = _S.UNKNOWN
    message = _call_attr(exc, "details") or code.name
    details = _parse_details(exc)
    error_type = _wire_error_type(details.info) or _client_error_type(
        code, details.retry_delay is not None, deadline_remaining
    )
    reason = (details.info.reason if details.info else "") or code.name
    metadata = dict(details.info.metadata) if details.info else {}
    metadata.pop(ERROR_TYPE_METADATA_KEY, None)
    retry_after = details.retry_delay if details.retry_delay is not None else details.pushback
    return _kind_for(code, error_type, reason)(
        str(message),
        reason=reason,
        error_type=error_type,
        retry_after=retry_after,
        violations=details.violations,
        metadata=metadata,
    )
