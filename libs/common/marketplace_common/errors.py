"""The error taxonomy shared by both services (docs/errors.md).

Every failure is one of four types, and the type decides whether anyone
retries:

* ``TRANSIENT``: the same call may succeed later (retry with backoff).
* ``PERMANENT``: the same call fails again (never retry).
* ``FATAL``: something is broken or unsafe (never retry; logged and counted).
* ``LLM_FIXABLE``: an LLM answered but the answer failed validation (re-ask
  with the validation errors fed back, on a budget of its own).

The classes below carry no transport code: ``marketplace_common.status``
holds the one table that maps them to gRPC status codes, and back.
Each class names a *kind* of failure (not found, conflict, ...); services
subclass them for their own errors and give each a ``reason`` (UPPER_SNAKE,
the ``google.rpc.ErrorInfo`` reason clients switch on).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar


class ErrorType(enum.StrEnum):
    """The four error types; the value is the name used on the wire (``errorType``)."""

    TRANSIENT = "TRANSIENT"
    PERMANENT = "PERMANENT"
    FATAL = "FATAL"
    LLM_FIXABLE = "LLM_FIXABLE"

    @property
    def retryable(self) -> bool:
        """True for the types a retry can help: TRANSIENT and LLM_FIXABLE."""
        return self in (ErrorType.TRANSIENT, ErrorType.LLM_FIXABLE)


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field of a request (google.rpc.BadRequest.FieldViolation).

    ``field`` is a dotted path in the request (``budget.currency_code``).
    """

    field: str
    description: str


class AgentError(Exception):
    """Base of every error the project raises on purpose.

    Attributes:
        message: safe to show to the caller (no SQL, no stack, no secrets).
        reason: UPPER_SNAKE machine-readable reason (ErrorInfo.reason).
        error_type: the taxonomy type; a class default that an instance may
            override (a client-side error rebuilt from a status keeps the
            type the server sent).
        retry_after: seconds a server says to wait before retrying, if any.
        violations: the invalid fields, for validation failures.
        metadata: extra ErrorInfo metadata (string to string).
        origin_code: the code of the failure this error was classified from
            (HTTP status, SQLSTATE, exception class), for records and logs;
            None for an error we raised ourselves.
    """

    error_type: ErrorType = ErrorType.FATAL
    default_reason: ClassVar[str] = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        error_type: ErrorType | None = None,
        retry_after: float | None = None,
        violations: Sequence[FieldViolation] = (),
        metadata: Mapping[str, str] | None = None,
        origin_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        if error_type is not None:
            self.error_type = error_type
        self.retry_after = retry_after
        self.violations: tuple[FieldViolation, ...] = tuple(violations)
        self.metadata: dict[str, str] = dict(metadata or {})
        self.origin_code = origin_code

    @property
    def retryable(self) -> bool:
        """True when a retry may help (TRANSIENT or LLM_FIXABLE)."""
        return self.error_type.retryable

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


# --- the four types -------------------------------------------------------


class TransientError(AgentError):
    """The same call may succeed later."""

    error_type = ErrorType.TRANSIENT
    default_reason = "UNAVAILABLE"


class PermanentError(AgentError):
    """The same call fails again; do not retry."""

    error_type = ErrorType.PERMANENT
    default_reason = "FAILED_PRECONDITION"


class FatalError(AgentError):
    """Something is broken or unsafe; do not retry, log at error level."""

    error_type = ErrorType.FATAL
    default_reason = "INTERNAL"


class LLMFixableError(AgentError):
    """An LLM answer failed validation; re-ask with ``violations`` fed back."""

    error_type = ErrorType.LLM_FIXABLE
    default_reason = "LLM_OUTPUT_INVALID"


# --- kinds of transient failure --------------------------------------------


class UnavailableError(TransientError):
    """A dependency (database, another service, a provider) is down or unreachable."""

    default_reason = "UNAVAILABLE"


class ConflictError(TransientError):
    """A transaction conflict (serialization failure, deadlock): retry the whole call."""

    default_reason = "TRANSACTION_CONFLICT"


class RateLimitedError(TransientError):
    """Rate limited or out of quota for now; ``retry_after`` says when to come back."""

    default_reason = "RATE_LIMITED"


class DeadlineExceededError(TransientError):
    """The call ran out of time."""

    default_reason = "DEADLINE_EXCEEDED"


# --- kinds of permanent failure ----------------------------------------------


class InvalidArgumentError(PermanentError):
    """The request is malformed; ``violations`` names every bad field."""

    default_reason = "INVALID_ARGUMENT"


class NotFoundError(PermanentError):
    """The addressed resource does not exist (or the caller may not know it does)."""

    default_reason = "NOT_FOUND"


class AlreadyExistsError(PermanentError):
    """The resource to create already exists."""

    default_reason = "ALREADY_EXISTS"


class FailedPreconditionError(PermanentError):
    """The system is not in the state the operation needs (a wrong transition)."""

    default_reason = "FAILED_PRECONDITION"


class UnauthenticatedError(PermanentError):
    """No valid credentials were presented."""

    default_reason = "UNAUTHENTICATED"


class PermissionDeniedError(PermanentError):
    """The caller is known but may not do this."""

    default_reason = "PERMISSION_DENIED"


class OutOfRangeError(PermanentError):
    """A value is valid in shape but past the end of a range (a page past the end)."""

    default_reason = "OUT_OF_RANGE"


class IdempotencyKeyReusedError(InvalidArgumentError):
    """An idempotency key (``request_id``, ``event_id``) came before with another request."""

    default_reason = "IDEMPOTENCY_KEY_REUSED"

    def __init__(self, field: str, key: object) -> None:
        super().__init__(
            f"{field} {key} was already used with a different request",
            violations=[FieldViolation(field, "already used with a different request")],
        )
        self.field = field
        self.key = str(key)


class LLMOutputInvalidError(PermanentError):
    """The LLM re-ask budget is spent (or the same validation error came twice).

    ``violations`` holds the last validation errors.
    """

    default_reason = "LLM_OUTPUT_INVALID"


# --- kinds of fatal failure --------------------------------------------------


class InternalError(FatalError):
    """A bug or an unexpected state in our own code."""

    default_reason = "INTERNAL"


class DataLossError(FatalError):
    """Stored data is corrupt or does not match its checks."""

    default_reason = "DATA_LOSS"


# --- the status of each kind, and errors as the domain sees them -------------------

STATUS_FOR_KIND: Mapping[type[AgentError], str] = MappingProxyType(
    {
        UnavailableError: "UNAVAILABLE",
        ConflictError: "ABORTED",
        RateLimitedError: "RESOURCE_EXHAUSTED",
        DeadlineExceededError: "DEADLINE_EXCEEDED",
        InvalidArgumentError: "INVALID_ARGUMENT",
        NotFoundError: "NOT_FOUND",
        AlreadyExistsError: "ALREADY_EXISTS",
        FailedPreconditionError: "FAILED_PRECONDITION",
        UnauthenticatedError: "UNAUTHENTICATED",
        PermissionDeniedError: "PERMISSION_DENIED",
        OutOfRangeError: "OUT_OF_RANGE",
        LLMOutputInvalidError: "FAILED_PRECONDITION",
        LLMFixableError: "FAILED_PRECONDITION",
        InternalError: "INTERNAL",
        DataLossError: "DATA_LOSS",
        TransientError: "UNAVAILABLE",
        PermanentError: "FAILED_PRECONDITION",
        FatalError: "INTERNAL",
    }
)
"""The gRPC status (by name) of each kind; the nearest class in the MRO wins.
``marketplace_common.status`` turns the names into codes."""

_STATUS_FOR_TYPE: Mapping[ErrorType, str] = MappingProxyType(
    {
        ErrorType.TRANSIENT: "UNAVAILABLE",
        ErrorType.PERMANENT: "FAILED_PRECONDITION",
        ErrorType.FATAL: "INTERNAL",
        ErrorType.LLM_FIXABLE: "FAILED_PRECONDITION",
    }
)


def status_name(err: AgentError) -> str:
    """The gRPC status name for an error: its nearest kind in ``STATUS_FOR_KIND``.

    A class deriving from ``AgentError`` directly falls back to its error type.
    """
    for cls in type(err).__mro__:
        name = STATUS_FOR_KIND.get(cls)
        if name is not None:
            return name
    return _STATUS_FOR_TYPE[err.error_type]


# The adapters (storage, the BidService client, the LLM providers) classify the
# failures of their libraries (``marketplace_common.classify``) and raise
# AgentErrors; the domain reads them with the three functions below, which know
# only the standard library's exceptions besides.


def known_error(exc: BaseException) -> AgentError:
    """``exc`` as an AgentError: itself, or the kind of a standard failure, else INTERNAL.

    A ``TimeoutError`` (an ``asyncio.timeout`` of our own) is DEADLINE_EXCEEDED;
    cancellation is PERMANENT (CANCELLED); anything else reached the domain
    unclassified, a bug of ours, with a message that tells nothing of it.
    """
    if isinstance(exc, AgentError):
        return exc
    if isinstance(exc, TimeoutError):
        return DeadlineExceededError("A dependency did not answer in time.")
    if not isinstance(exc, Exception):
        return PermanentError("The operation was cancelled.", reason="CANCELLED")
    return InternalError("Internal error.")


def error_type_of(exc: BaseException) -> ErrorType:
    """The ErrorType of ``exc`` as ``known_error`` sees it."""
    return known_error(exc).error_type


def failure_code(exc: BaseException) -> str:
    """A short code for records and logs: the origin's code, the status name, or the class."""
    if isinstance(exc, AgentError):
        return exc.origin_code or status_name(exc)
    return type(exc).__name__
