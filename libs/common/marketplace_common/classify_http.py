"""The LLM client's errors in the taxonomy: the ``openai`` client and raw httpx.

Rules used by :mod:`marketplace_common.classify` (which owns the public API:
``categorize_exception``, ``as_agent_error``): :func:`by_openai` and
:func:`by_httpx` give the ErrorType from the exception class and its HTTP
status (408, 409, 429 and 5xx are TRANSIENT, other statuses PERMANENT, and
error codes no wait can cure, such as ``insufficient_quota``, PERMANENT);
:func:`wrap_llm_permanent` turns a PERMANENT ``openai`` error into an
AgentError with a safe message. Neither library is imported here:
:func:`is_instance_of` looks classes up in ``sys.modules``, since an exception
of a library that was never imported cannot exist.
"""

from __future__ import annotations

import sys

from marketplace_common.errors import (
    AgentError,
    ErrorType,
    FailedPreconditionError,
    InvalidArgumentError,
)

__all__ = ["by_httpx", "by_openai", "is_instance_of", "wrap_llm_permanent"]

T = ErrorType

_LLM_PERMANENT_CODES = frozenset(
    {
        "context_length_exceeded",
        "content_policy_violation",
        "content_filter",
        "insufficient_quota",  # a 429 that waiting does not cure
        "invalid_api_key",
    }
)


def _module_class(module: str, name: str) -> type[BaseException] | None:
    cls = getattr(sys.modules.get(module), name, None)
    return cls if isinstance(cls, type) and issubclass(cls, BaseException) else None


def is_instance_of(exc: BaseException, module: str, name: str) -> bool:
    """True when ``exc`` is a ``module.name``, a class of a library that is already imported."""
    cls = _module_class(module, name)
    return cls is not None and isinstance(exc, cls)


def _status_code_type(status: int) -> ErrorType:
    if status in (408, 409, 429) or status >= 500:
        return T.TRANSIENT
    return T.PERMANENT


def by_openai(exc: Exception) -> ErrorType | None:
    """The ErrorType of an ``openai`` client error, None for any other exception."""
    if not is_instance_of(exc, "openai", "OpenAIError"):
        return None
    if is_instance_of(exc, "openai", "APIConnectionError"):  # includes APITimeoutError
        return T.TRANSIENT
    if is_instance_of(exc, "openai", "APIStatusError"):
        if getattr(exc, "code", None) in _LLM_PERMANENT_CODES:
            return T.PERMANENT
        return _status_code_type(int(getattr(exc, "status_code", 500)))
    if is_instance_of(exc, "openai", "LengthFinishReasonError"):
        return T.LLM_FIXABLE  # the answer was cut off: re-asking for a shorter one can fix it
    if is_instance_of(exc, "openai", "ContentFilterFinishReasonError"):
        return T.PERMANENT
    if is_instance_of(exc, "openai", "APIResponseValidationError"):
        return T.PERMANENT  # an incompatible endpoint stays incompatible
    return T.FATAL


def by_httpx(exc: Exception) -> ErrorType | None:
    """The ErrorType of an httpx transport or HTTP status error, None for any other."""
    for module in ("httpx2", "httpx"):
        if is_instance_of(exc, module, "TransportError"):
            return T.TRANSIENT
        if is_instance_of(exc, module, "HTTPStatusError"):
            return _status_code_type(int(exc.response.status_code))  # type: ignore[attr-defined]
    return None


def wrap_llm_permanent(exc: Exception) -> AgentError:
    """A safe AgentError for a PERMANENT ``openai`` error (refused, too long, rejected)."""
    code = getattr(exc, "code", None)
    if code == "context_length_exceeded":
        return InvalidArgumentError(
            "The prompt is too long for the model.", reason="CONTEXT_LENGTH_EXCEEDED"
        )
    if code in ("content_policy_violation", "content_filter") or is_instance_of(
        exc, "openai", "ContentFilterFinishReasonError"
    ):
        return FailedPreconditionError(
            "The LLM provider refused the content.", reason="CONTENT_POLICY_VIOLATION"
        )
    status = getattr(exc, "status_code", None)
    suffix = f" (HTTP {status})" if isinstance(status, int) else ""
    return FailedPreconditionError(
        f"The LLM provider rejected the request{suffix}.", reason="LLM_REQUEST_REJECTED"
    )
