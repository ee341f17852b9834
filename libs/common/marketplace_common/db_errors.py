"""Database failures mapped to the error taxonomy (docs/errors.md).

:func:`translate_db_error` is the public entry (re-exported by
:mod:`marketplace_common.db`). The pieces below it serve
:func:`marketplace_common.db.run_transaction`, which retries some kinds
before translating: :func:`classify_db_error` sorts a failure into a
:class:`DbErrorKind` by SQLSTATE first (PostgreSQL), then SQLite's busy /
locked codes, then connection-level exceptions; :func:`to_agent_error`
turns a kind into :class:`ConflictError`, :class:`UnavailableError` or
:class:`DeadlineExceededError` with a message that never contains SQL.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Iterator

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import exc as sa_exc

from marketplace_common.errors import (
    AgentError,
    ConflictError,
    DeadlineExceededError,
    UnavailableError,
)

__all__ = [
    "CONFLICT_RETRY_AFTER",
    "RETRYABLE_KINDS",
    "UNAVAILABLE_RETRY_AFTER",
    "DbErrorKind",
    "classify_db_error",
    "find_sqlstate",
    "to_agent_error",
    "translate_db_error",
]

#: Seconds a client should wait after a conflict / an outage (RetryInfo).
CONFLICT_RETRY_AFTER = 0.05
UNAVAILABLE_RETRY_AFTER = 1.0


class DbErrorKind(enum.Enum):
    """What a database failure means for the caller (``OTHER``: not ours to map)."""

    CONFLICT = "conflict"
    BUSY = "busy"
    LOCK_TIMEOUT = "lock_timeout"
    STATEMENT_TIMEOUT = "statement_timeout"
    UNAVAILABLE = "unavailable"
    OTHER = "other"


#: Kinds that a fresh attempt of the whole transaction may cure.
RETRYABLE_KINDS = frozenset({DbErrorKind.CONFLICT, DbErrorKind.BUSY})
_CONFLICT_STATES = frozenset({"40001", "40P01"})
# admin/crash shutdown, cannot connect now, too many connections, out of memory/disk
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "53300", "53200", "53100"})
_SQLITE_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, timed out (TimeoutError is an OSError)
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # no pooled connection within pool_timeout
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the DBAPI error it wraps, and their causes (bounded)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 8:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend((getattr(current, "orig", None), current.__cause__))


def find_sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of ``exc`` or of an error it wraps, or None."""
    for err in _chain(exc):
        state = getattr(err, "sqlstate", None)
        if isinstance(state, str) and state:
            return state
    return None


def _is_sqlite_busy(err: BaseException) -> bool:
    if not isinstance(err, sqlite3.OperationalError):
        return False
    code = getattr(err, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) in _SQLITE_BUSY_CODES:
        return True
    text = str(err).lower()
    return "database is locked" in text or "database table is locked" in text


def classify_db_error(exc: BaseException) -> DbErrorKind:
    """The kind of database failure ``exc`` is; an :class:`AgentError` is ``OTHER``."""
    if isinstance(exc, AgentError):
        return DbErrorKind.OTHER
    state = find_sqlstate(exc)
    if state in _CONFLICT_STATES:
        return DbErrorKind.CONFLICT
    if state == "55P03":
        return DbErrorKind.LOCK_TIMEOUT
    if state == "57014":
        return DbErrorKind.STATEMENT_TIMEOUT
    if state is not None and (state in _UNAVAILABLE_STATES or state.startswith("08")):
        return DbErrorKind.UNAVAILABLE
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return DbErrorKind.UNAVAILABLE
    chain = list(_chain(exc))
    if any(_is_sqlite_busy(err) for err in chain):
        return DbErrorKind.BUSY
    if any(isinstance(err, _CONNECTION_ERRORS) for err in chain):
        return DbErrorKind.UNAVAILABLE
    return DbErrorKind.OTHER


def to_agent_error(exc: BaseException, kind: DbErrorKind) -> AgentError | None:
    """The taxonomy error for ``exc`` of ``kind``, or None for ``OTHER``."""
    state = find_sqlstate(exc)
    metadata = {"sqlstate": state} if state else {}
    if kind is DbErrorKind.CONFLICT:
        return ConflictError(
            "the transaction conflicted with a concurrent one; retry the call",
            retry_after=CONFLICT_RETRY_AFTER,
            metadata=metadata,
        )
    if kind is DbErrorKind.BUSY:
        return ConflictError(
            "the database is busy with other writers; retry the call",
            retry_after=CONFLICT_RETRY_AFTER,
        )
    if kind is DbErrorKind.LOCK_TIMEOUT:
        return ConflictError(
            "a row lock could not be acquired in time; retry the call",
            reason="LOCK_TIMEOUT",
            retry_after=CONFLICT_RETRY_AFTER,
            metadata=metadata,
        )
    if kind is DbErrorKind.STATEMENT_TIMEOUT:
        return DeadlineExceededError(
            "a database statement took too long", retry_after=UNAVAILABLE_RETRY_AFTER
        )
    if kind is DbErrorKind.UNAVAILABLE:
        return UnavailableError(
            "the database is unavailable; retry later",
            reason="DATABASE_UNAVAILABLE",
            retry_after=UNAVAILABLE_RETRY_AFTER,
            metadata=metadata,
        )
    return None


def translate_db_error(exc: BaseException) -> AgentError | None:
    """The taxonomy error for a database failure, or None when ``exc`` is not one we map.

    Conflicts, deadlocks, lock timeouts and a busy SQLite database give
    :class:`ConflictError`; a lost or refused connection
    :class:`UnavailableError`; a statement timeout
    :class:`DeadlineExceededError`. Messages never contain SQL.
    """
    return to_agent_error(exc, classify_db_error(exc))
