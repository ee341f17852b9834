"""Classify any exception into the error taxonomy (docs/errors.md).

``categorize_exception`` never raises and knows: our ``AgentError``; asyncio,
socket and OS errors; SQLAlchemy, asyncpg and sqlite3 errors (by SQLSTATE
first, since through SQLAlchemy's asyncpg dialect a serialization failure is
a plain ``DBAPIError``); gRPC errors (by the client rules, see ``status``);
pydantic and jsonschema validation errors; the ``openai`` client's errors and
raw httpx transport errors. Anything else is FATAL: an exception nobody
planned for is a bug in our own code.

Decisions worth knowing:

* ``asyncio.CancelledError`` (and any other ``BaseException`` that is not an
  ``Exception``) is PERMANENT: the caller gave up, so retrying is wrong, and it
  is not a bug, so not FATAL. ``retrying.retry_call`` never catches it anyway.
* A raw ``jsonschema.ValidationError`` or ``json.JSONDecodeError`` is
  PERMANENT, not LLM_FIXABLE: the type alone cannot tell model output from a
  bad request or a broken config file. The execution service wraps failures of
  model output in ``LLMFixableError`` itself, where it knows their origin.
* sqlite3 errors other than busy/locked (no such table, disk I/O, corrupt
  file) are FATAL, although SQLAlchemy calls them ``OperationalError``.
* The optional libraries (asyncpg, openai, jsonschema, httpx) are looked up
  in ``sys.modules``: an exception of a library that was never imported
  cannot exist, so this module imports none of them.

Where things live: this module holds the public API, the rules for
databases, validation and OS errors, and the wrapping into ``AgentError``;
the rules for the ``openai`` client and httpx (by HTTP status) and the
``sys.modules`` lookup are in :mod:`marketplace_common.classify_http`.
"""

from __future__ import annotations

import asyncio
import errno
import json
import re
import socket
import sqlite3
from collections.abc import Callable, Iterable

import grpc
import pydantic
from sqlalchemy import exc as sa_exc

from marketplace_common.classify_http import by_httpx, by_openai, is_instance_of, wrap_llm_permanent
from marketplace_common.delays import server_directed_delay
from marketplace_common.errors import (
    AgentError,
    AlreadyExistsError,
    ConflictError,
    DeadlineExceededError,
    ErrorType,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    LLMFixableError,
    PermanentError,
    RateLimitedError,
    UnavailableError,
    failure_code,
)
from marketplace_common.status import from_rpc_error

__all__ = [
    "as_agent_error",
    "categorize_exception",
    "error_code",
    "server_directed_delay",
]

T = ErrorType

_TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "57014",  # query_canceled (statement_timeout)
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
        "53300",  # too_many_connections
    }
)
_SQLSTATE_CLASSES = {
    "08": T.TRANSIENT,  # connection exception
    "23": T.PERMANENT,  # integrity constraint violation
    "22": T.PERMANENT,  # data exception (a value the column cannot hold)
    "42": T.FATAL,  # syntax error or access rule violation: our SQL is wrong
    "XX": T.FATAL,  # internal error, data or index corrupted
}
_CONFLICT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})

_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.EPIPE,
        errno.EAGAIN,
        errno.EADDRNOTAVAIL,
    }
)
_SQLITE_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (primary codes)
_SQLITE_BUSY_TEXT = re.compile(r"database (table )?is locked|database is busy", re.IGNORECASE)


def categorize_exception(exc: BaseException) -> ErrorType:
    """The ErrorType of any exception; never raises (FATAL when unsure)."""
    try:
        return _categorize(exc)
    except Exception:
        return T.FATAL


def _categorize(exc: BaseException) -> ErrorType:
    if isinstance(exc, AgentError):
        return exc.error_type
    if isinstance(exc, BaseExceptionGroup):
        return _worst(categorize_exception(e) for e in exc.exceptions)
    if not isinstance(exc, Exception):  # CancelledError, KeyboardInterrupt, SystemExit
        return T.PERMANENT
    if isinstance(exc, grpc.RpcError):
        return from_rpc_error(exc).error_type
    for rule in _RULES:
        found = rule(exc)
        if found is not None:
            return found
    return T.FATAL


_SEVERITY = (T.FATAL, T.PERMANENT, T.LLM_FIXABLE, T.TRANSIENT)


def _worst(types: Iterable[ErrorType]) -> ErrorType:
    # A group is only as retryable as its least retryable member.
    found = set(types)
    return next((t for t in _SEVERITY if t in found), T.FATAL)


# --- rules, one per family; each returns None when the exception is not its own


def _driver_errors(exc: BaseException) -> list[object]:
    # SQLAlchemy keeps the driver's exception in .orig; its asyncpg adapter
    # (itself an .orig) keeps asyncpg's in .orig again and as __cause__.
    found: list[object] = [exc]
    orig = getattr(exc, "orig", None)
    if orig is not None:
        found += [orig, getattr(orig, "orig", None), getattr(orig, "__cause__", None)]
    return found


def _sqlstate_of(exc: BaseException) -> str | None:
    for candidate in _driver_errors(exc):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(state, str) and len(state) == 5:
            return state.upper()
    return None


def _by_sqlstate(exc: Exception) -> ErrorType | None:
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return T.TRANSIENT
    state = _sqlstate_of(exc)
    if state is None:
        return None
    if state in _TRANSIENT_SQLSTATES:
        return T.TRANSIENT
    return _SQLSTATE_CLASSES.get(state[:2])


def _sqlite_error(exc: BaseException) -> sqlite3.Error | None:
    return next((e for e in _driver_errors(exc) if isinstance(e, sqlite3.Error)), None)


def _is_sqlite_busy(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) in _SQLITE_BUSY_CODES:
        return True
    return bool(_SQLITE_BUSY_TEXT.search(str(error)))


def _by_sqlite(exc: Exception) -> ErrorType | None:
    error = _sqlite_error(exc)
    if error is None:
        return None
    if _is_sqlite_busy(error):
        return T.TRANSIENT
    return T.PERMANENT if isinstance(error, sqlite3.IntegrityError) else T.FATAL


def _by_sqlalchemy(exc: Exception) -> ErrorType | None:
    if isinstance(exc, sa_exc.IntegrityError):
        return T.PERMANENT
    if isinstance(exc, sa_exc.DataError):
        return T.PERMANENT
    if isinstance(exc, sa_exc.OperationalError | sa_exc.DisconnectionError | sa_exc.TimeoutError):
        return T.TRANSIENT
    if isinstance(exc, sa_exc.SQLAlchemyError):
        return T.FATAL
    return None


def _by_validation(exc: Exception) -> ErrorType | None:
    if isinstance(exc, pydantic.ValidationError | json.JSONDecodeError):
        return T.PERMANENT
    if any(is_instance_of(exc, "jsonschema", name) for name in ("ValidationError", "SchemaError")):
        return T.PERMANENT
    return None


def _by_os(exc: Exception) -> ErrorType | None:
    if isinstance(exc, TimeoutError | ConnectionError | asyncio.IncompleteReadError):
        return T.TRANSIENT
    if isinstance(exc, socket.gaierror):
        return T.TRANSIENT if exc.errno == socket.EAI_AGAIN else T.PERMANENT
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return T.TRANSIENT
    return None


_RULES: tuple[Callable[[Exception], ErrorType | None], ...] = (
    _by_sqlstate,
    _by_sqlite,
    _by_sqlalchemy,
    by_openai,
    by_httpx,
    _by_validation,
    _by_os,
)


# --- wrapping --------------------------------------------------------------------


def error_code(exc: BaseException) -> str:
    """A short code for records and logs: the gRPC code name, HTTP status, SQLSTATE or class."""
    try:
        if isinstance(exc, AgentError):
            return failure_code(exc)
        if isinstance(exc, grpc.RpcError):
            code = exc.code()
            return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
        status = getattr(exc, "status_code", None)
        if isinstance(status, int):
            return str(status)
        return _sqlstate_of(exc) or type(exc).__name__
    except Exception:
        return type(exc).__name__


def as_agent_error(exc: BaseException) -> AgentError:
    """``exc`` as an ``AgentError`` of the right kind, with a message safe to send.

    An ``AgentError`` is returned as is, a gRPC error rebuilt by
    ``status.from_rpc_error``. Anything else is wrapped by its type (see
    ``categorize_exception``) into a kind whose message names no SQL, stack or
    value; ``retry_after`` is kept when the error carries a server-directed
    delay, and ``origin_code`` is its ``error_code``. Callers should
    ``raise as_agent_error(e) from e`` to keep the cause.
    """
    if isinstance(exc, AgentError):
        return exc
    if isinstance(exc, grpc.RpcError):
        return from_rpc_error(exc)
    error_type = categorize_exception(exc)
    try:
        err = _wrap(exc, error_type)
    except Exception:
        err = InternalError("Internal error.")
    err.retry_after = server_directed_delay(exc)
    err.origin_code = error_code(exc)
    return err


def _wrap(exc: BaseException, error_type: ErrorType) -> AgentError:
    if error_type is T.TRANSIENT:
        return _wrap_transient(exc)
    if error_type is T.PERMANENT:
        return _wrap_permanent(exc)
    if error_type is T.LLM_FIXABLE:
        return LLMFixableError("The model's answer was cut off or invalid.")
    return InternalError("Internal error.")


def _wrap_transient(exc: BaseException) -> AgentError:
    state = _sqlstate_of(exc)
    if state in _CONFLICT_SQLSTATES or (state is None and _sqlite_error(exc) is not None):
        return ConflictError("The transaction conflicted with another; retry the call.")
    status = getattr(exc, "status_code", None)
    if status == 429:
        return RateLimitedError("A dependency is rate limiting us; retry later.")
    if isinstance(exc, TimeoutError) or is_instance_of(exc, "openai", "APITimeoutError"):
        return DeadlineExceededError("A dependency did not answer in time.")
    return UnavailableError("A dependency is unavailable; retry later.")


def _wrap_permanent(exc: BaseException) -> AgentError:
    if not isinstance(exc, Exception):
        return PermanentError("The operation was cancelled.", reason="CANCELLED")
    if isinstance(exc, pydantic.ValidationError):
        return InvalidArgumentError("The request is invalid.", violations=_pydantic_violations(exc))
    state = _sqlstate_of(exc) or ""
    if state == "23505" or _is_sqlite_unique_violation(exc):
        return AlreadyExistsError("The resource already exists.")
    if state.startswith("22"):
        return InvalidArgumentError("A value is out of range for storage.")
    if is_instance_of(exc, "openai", "OpenAIError"):
        return wrap_llm_permanent(exc)
    return FailedPreconditionError("The operation cannot be performed.")


def _is_sqlite_unique_violation(exc: BaseException) -> bool:
    error = _sqlite_error(exc)
    if not isinstance(error, sqlite3.IntegrityError):
        return False
    # SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE
    code = getattr(error, "sqlite_errorcode", None)
    return code in (1555, 2067) or "UNIQUE constraint failed" in str(error)


def _pydantic_violations(exc: pydantic.ValidationError) -> list[FieldViolation]:
    # msg only (never the input value): pydantic messages name the rule, not the data.
    return [
        FieldViolation(".".join(str(p) for p in error["loc"]) or "request", error["msg"])
        for error in exc.errors(include_url=False, include_input=False)
    ]
