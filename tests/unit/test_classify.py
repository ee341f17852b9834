"""categorize_exception, server_directed_delay and as_agent_error.

Every case builds the real exception object of its library.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import sqlite3
from pathlib import Path

import asyncpg.exceptions as pg  # type: ignore[import-untyped]
import grpc
import grpc.aio
import httpx2
import jsonschema
import openai
import pydantic
import pytest
from marketplace_common.classify import (
    as_agent_error,
    categorize_exception,
    error_code,
    server_directed_delay,
)
from marketplace_common.errors import (
    AgentError,
    AlreadyExistsError,
    ConflictError,
    DeadlineExceededError,
    ErrorType,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    LLMFixableError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    UnavailableError,
)
from openai.types.chat import ChatCompletion
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi

T = ErrorType
SECRET_SQL = "SELECT api_key FROM secrets WHERE owner = 'alice'"


# --- builders for real library exceptions ---------------------------------------------


def via_sqlalchemy_asyncpg(error: pg.PostgresError) -> sa_exc.DBAPIError:
    """What SQLAlchemy's asyncpg dialect raises: DBAPIError around its adapter error."""
    adapted = AsyncAdapt_asyncpg_dbapi.Error(str(error), error)  # type: ignore[no-untyped-call]
    adapted.__cause__ = error
    wrapped = sa_exc.DBAPIError.instance(SECRET_SQL, {"owner": "alice"}, adapted, Exception)
    assert isinstance(wrapped, sa_exc.DBAPIError)
    return wrapped


def http_request() -> httpx2.Request:
    return httpx2.Request("POST", "http://llm.test/v1/chat/completions")


def status_error(
    status: int, *, code: str | None = None, headers: dict[str, str] | None = None
) -> openai.APIStatusError:
    body = {"message": "provider says no", "code": code}
    response = httpx2.Response(status, headers=headers, request=http_request(), json=body)
    return openai.APIStatusError("provider says no", response=response, body=body)


def rpc_error(code: grpc.StatusCode, *trailing: tuple[str, str]) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), "failed", None
    )


def truncated_completion() -> ChatCompletion:
    return ChatCompletion(
        id="c-1", choices=[], created=0, model="m", object="chat.completion", usage=None
    )


class Money(pydantic.BaseModel):
    currency_code: str = pydantic.Field(pattern="^[A-Z]{3}$")
    units: int


def pydantic_error() -> pydantic.ValidationError:
    try:
        Money.model_validate({"currency_code": "dollars", "units": "many"})
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("validation passed")


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    path = tmp_path / "db.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    return path


def sqlite_locked_error(path: Path) -> sqlite3.OperationalError:
    holder = sqlite3.connect(path, isolation_level=None)
    waiter = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        waiter.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        holder.close()
        waiter.close()
    raise AssertionError("no lock conflict")


def sqlite_error(path: Path, sql: str) -> sqlite3.Error:
    conn = sqlite3.connect(path)
    try:
        conn.execute("INSERT INTO t (id) VALUES (1)")
        conn.execute(sql)
    except sqlite3.Error as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError("no error")


# --- our own errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (UnavailableError("down"), T.TRANSIENT),
        (NotFoundError("gone"), T.PERMANENT),
        (InternalError("bug"), T.FATAL),
        (LLMFixableError("bad json"), T.LLM_FIXABLE),
        (NotFoundError("gone", error_type=T.TRANSIENT), T.TRANSIENT),
    ],
)
def test_agent_error_keeps_its_type(err: AgentError, expected: ErrorType) -> None:
    assert categorize_exception(err) is expected


# --- asyncio, socket and OS errors ----------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TimeoutError(), T.TRANSIENT),
        (TimeoutError("timed out"), T.TRANSIENT),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), T.TRANSIENT),
        (ConnectionResetError(errno.ECONNRESET, "reset"), T.TRANSIENT),
        (BrokenPipeError(errno.EPIPE, "pipe"), T.TRANSIENT),
        (OSError(errno.ECONNREFUSED, "refused"), T.TRANSIENT),
        (OSError(errno.ENETUNREACH, "no route"), T.TRANSIENT),
        (OSError(errno.EHOSTUNREACH, "no host"), T.TRANSIENT),
        (socket.gaierror(socket.EAI_AGAIN, "try again"), T.TRANSIENT),
        (socket.gaierror(socket.EAI_NONAME, "unknown host"), T.PERMANENT),
        (asyncio.IncompleteReadError(b"", 10), T.TRANSIENT),
        (FileNotFoundError(errno.ENOENT, "missing"), T.FATAL),
        (PermissionError(errno.EACCES, "denied"), T.FATAL),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_os_and_asyncio_errors(exc: BaseException, expected: ErrorType) -> None:
    assert categorize_exception(exc) is expected


def test_cancellation_is_permanent_not_fatal() -> None:
    assert categorize_exception(asyncio.CancelledError()) is T.PERMANENT
    assert categorize_exception(KeyboardInterrupt()) is T.PERMANENT


# --- PostgreSQL by SQLSTATE -----------------------------------------------------------

SQLSTATE_ROWS: list[tuple[type[pg.PostgresError], ErrorType]] = [
    (pg.SerializationError, T.TRANSIENT),  # 40001
    (pg.DeadlockDetectedError, T.TRANSIENT),  # 40P01
    (pg.LockNotAvailableError, T.TRANSIENT),  # 55P03
    (pg.AdminShutdownError, T.TRANSIENT),  # 57P01
    (pg.CannotConnectNowError, T.TRANSIENT),  # 57P03
    (pg.QueryCanceledError, T.TRANSIENT),  # 57014 (statement_timeout)
    (pg.ConnectionDoesNotExistError, T.TRANSIENT),  # 08003
    (pg.ConnectionFailureError, T.TRANSIENT),  # 08006
    (pg.TooManyConnectionsError, T.TRANSIENT),  # 53300
    (pg.UniqueViolationError, T.PERMANENT),  # 23505
    (pg.ForeignKeyViolationError, T.PERMANENT),  # 23503
    (pg.CheckViolationError, T.PERMANENT),  # 23514
    (pg.InvalidTextRepresentationError, T.PERMANENT),  # 22P02
    (pg.UndefinedTableError, T.FATAL),  # 42P01
    (pg.DataCorruptedError, T.FATAL),  # XX001
]


@pytest.mark.parametrize(
    ("cls", "expected"), SQLSTATE_ROWS, ids=lambda v: getattr(v, "sqlstate", v)
)
def test_raw_asyncpg_error_by_sqlstate(cls: type[pg.PostgresError], expected: ErrorType) -> None:
    assert categorize_exception(cls("boom")) is expected


@pytest.mark.parametrize(
    ("cls", "expected"), SQLSTATE_ROWS, ids=lambda v: getattr(v, "sqlstate", v)
)
def test_sqlalchemy_asyncpg_error_by_sqlstate(
    cls: type[pg.PostgresError], expected: ErrorType
) -> None:
    assert categorize_exception(via_sqlalchemy_asyncpg(cls("boom"))) is expected


def test_serialization_failure_arrives_as_plain_dbapi_error() -> None:
    # The reason SQLSTATE, not the class, decides: this is not an OperationalError.
    exc = via_sqlalchemy_asyncpg(pg.SerializationError("could not serialize"))
    assert type(exc) is sa_exc.DBAPIError
    assert categorize_exception(exc) is T.TRANSIENT


def test_invalidated_connection_is_transient() -> None:
    exc = sa_exc.DBAPIError(SECRET_SQL, None, Exception("gone"), connection_invalidated=True)
    assert categorize_exception(exc) is T.TRANSIENT


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (sa_exc.OperationalError(SECRET_SQL, None, Exception("server closed")), T.TRANSIENT),
        (sa_exc.DisconnectionError("pool pre-ping failed"), T.TRANSIENT),
        (sa_exc.TimeoutError("QueuePool limit reached"), T.TRANSIENT),
        (sa_exc.IntegrityError(SECRET_SQL, None, Exception("duplicate")), T.PERMANENT),
        (sa_exc.ProgrammingError(SECRET_SQL, None, Exception("syntax")), T.FATAL),
        (sa_exc.InvalidRequestError("misuse"), T.FATAL),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_sqlalchemy_error_classes_without_sqlstate(exc: Exception, expected: ErrorType) -> None:
    assert categorize_exception(exc) is expected


# --- SQLite (real errors from a real file) --------------------------------------------


def test_sqlite_database_locked_is_transient(sqlite_path: Path) -> None:
    exc = sqlite_locked_error(sqlite_path)
    assert categorize_exception(exc) is T.TRANSIENT
    wrapped = sa_exc.OperationalError("BEGIN IMMEDIATE", None, exc)
    assert categorize_exception(wrapped) is T.TRANSIENT


def test_sqlite_missing_table_is_fatal_although_operational(sqlite_path: Path) -> None:
    exc = sqlite_error(sqlite_path, "SELECT * FROM missing")
    assert categorize_exception(sa_exc.OperationalError("SELECT", None, exc)) is T.FATAL


def test_sqlite_unique_violation_is_permanent_already_exists(sqlite_path: Path) -> None:
    exc = sqlite_error(sqlite_path, "INSERT INTO t (id) VALUES (1)")
    wrapped = sa_exc.IntegrityError("INSERT", None, exc)
    assert categorize_exception(wrapped) is T.PERMANENT
    assert isinstance(as_agent_error(wrapped), AlreadyExistsError)


# --- gRPC -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, T.TRANSIENT),
        (grpc.StatusCode.ABORTED, T.TRANSIENT),
        (grpc.StatusCode.NOT_FOUND, T.PERMANENT),
        (grpc.StatusCode.INTERNAL, T.FATAL),
    ],
)
def test_grpc_error_by_client_rules(code: grpc.StatusCode, expected: ErrorType) -> None:
    assert categorize_exception(rpc_error(code)) is expected


# --- validation -----------------------------------------------------------------------


def test_pydantic_validation_error_is_permanent() -> None:
    assert categorize_exception(pydantic_error()) is T.PERMANENT


def test_raw_jsonschema_and_json_errors_are_permanent() -> None:
    with pytest.raises(jsonschema.ValidationError) as caught:
        jsonschema.validate({"a": 1}, {"type": "object", "required": ["b"]})
    with pytest.raises(json.JSONDecodeError) as decode:
        json.loads("{not json")
    assert categorize_exception(caught.value) is T.PERMANENT
    assert categorize_exception(decode.value) is T.PERMANENT


# --- the openai client ----------------------------------------------------------------


def test_openai_connection_and_timeout_errors_are_transient() -> None:
    assert categorize_exception(openai.APIConnectionError(request=http_request())) is T.TRANSIENT
    assert categorize_exception(openai.APITimeoutError(http_request())) is T.TRANSIENT


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (408, T.TRANSIENT),
        (409, T.TRANSIENT),
        (429, T.TRANSIENT),
        (500, T.TRANSIENT),
        (502, T.TRANSIENT),
        (503, T.TRANSIENT),
        (400, T.PERMANENT),
        (401, T.PERMANENT),
        (403, T.PERMANENT),
        (404, T.PERMANENT),
        (422, T.PERMANENT),
    ],
)
def test_openai_status_error_by_status(status: int, expected: ErrorType) -> None:
    assert categorize_exception(status_error(status)) is expected


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "context_length_exceeded"),
        (400, "content_policy_violation"),
        (429, "insufficient_quota"),
        (500, "content_filter"),
    ],
)
def test_openai_codes_that_no_retry_cures_are_permanent(status: int, code: str) -> None:
    assert categorize_exception(status_error(status, code=code)) is T.PERMANENT


def test_openai_specific_subclass_is_classified_by_status() -> None:
    response = httpx2.Response(429, request=http_request())
    assert categorize_exception(openai.RateLimitError("slow", response=response, body=None)) is (
        T.TRANSIENT
    )


def test_openai_truncated_answer_is_llm_fixable() -> None:
    completion = truncated_completion()
    assert categorize_exception(openai.LengthFinishReasonError(completion=completion)) is (
        T.LLM_FIXABLE
    )


def test_openai_content_filter_finish_is_permanent() -> None:
    assert categorize_exception(openai.ContentFilterFinishReasonError()) is T.PERMANENT


def test_raw_httpx_transport_error_is_transient() -> None:
    exc = httpx2.ConnectError("refused", request=http_request())
    assert categorize_exception(exc) is T.TRANSIENT


# --- unknowns, groups, robustness -----------------------------------------------------


@pytest.mark.parametrize(
    "exc", [ValueError("x"), KeyError("k"), RuntimeError("r"), ZeroDivisionError()]
)
def test_unknown_exception_is_fatal(exc: Exception) -> None:
    assert categorize_exception(exc) is T.FATAL


def test_exception_group_is_as_retryable_as_its_least_retryable_member() -> None:
    transient = ExceptionGroup("g", [TimeoutError(), ConnectionResetError()])
    mixed = ExceptionGroup("g", [TimeoutError(), NotFoundError("gone")])
    assert categorize_exception(transient) is T.TRANSIENT
    assert categorize_exception(mixed) is T.PERMANENT


class _Hostile(Exception):
    @property
    def orig(self) -> object:
        raise RuntimeError("property blew up")

    @property
    def response(self) -> object:
        raise RuntimeError("property blew up")


def test_categorize_never_raises() -> None:
    assert categorize_exception(_Hostile()) is T.FATAL
    assert server_directed_delay(_Hostile()) is None
    assert isinstance(as_agent_error(_Hostile()), InternalError)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (UnavailableError("down"), True),
        (LLMFixableError("bad json"), True),
        (NotFoundError("gone"), False),
        (ValueError("bug"), False),
        (asyncio.CancelledError(), False),
    ],
)
def test_retryable_for_transient_and_llm_fixable_only(exc: BaseException, expected: bool) -> None:
    assert categorize_exception(exc).retryable is expected


# --- as_agent_error -------------------------------------------------------------------


def test_agent_error_passes_through_unchanged() -> None:
    err = NotFoundError("gone")
    assert as_agent_error(err) is err


@pytest.mark.parametrize(
    ("exc", "kind", "error_type"),
    [
        (via_sqlalchemy_asyncpg(pg.SerializationError("x")), ConflictError, T.TRANSIENT),
        (via_sqlalchemy_asyncpg(pg.DeadlockDetectedError("x")), ConflictError, T.TRANSIENT),
        (via_sqlalchemy_asyncpg(pg.AdminShutdownError("x")), UnavailableError, T.TRANSIENT),
        (via_sqlalchemy_asyncpg(pg.UniqueViolationError("x")), AlreadyExistsError, T.PERMANENT),
        (via_sqlalchemy_asyncpg(pg.UndefinedTableError("x")), InternalError, T.FATAL),
        (ConnectionRefusedError(), UnavailableError, T.TRANSIENT),
        (TimeoutError(), DeadlineExceededError, T.TRANSIENT),
        (status_error(429), RateLimitedError, T.TRANSIENT),
        (status_error(401), FailedPreconditionError, T.PERMANENT),
        (status_error(400, code="context_length_exceeded"), InvalidArgumentError, T.PERMANENT),
        (openai.APITimeoutError(http_request()), DeadlineExceededError, T.TRANSIENT),
        (asyncio.CancelledError(), PermanentError, T.PERMANENT),
        (ValueError("x"), InternalError, T.FATAL),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_as_agent_error_picks_the_kind(
    exc: BaseException, kind: type[AgentError], error_type: ErrorType
) -> None:
    err = as_agent_error(exc)
    assert type(err) is kind
    assert err.error_type is error_type


def test_wrapped_message_carries_no_sql_or_values() -> None:
    err = as_agent_error(via_sqlalchemy_asyncpg(pg.SerializationError(SECRET_SQL)))
    assert "SELECT" not in err.message
    assert "alice" not in err.message


def test_unknown_exception_message_is_generic() -> None:
    err = as_agent_error(ValueError("password=hunter2"))
    assert "hunter2" not in err.message


def test_pydantic_error_becomes_invalid_argument_with_every_field() -> None:
    err = as_agent_error(pydantic_error())
    assert isinstance(err, InvalidArgumentError)
    assert {v.field for v in err.violations} == {"currency_code", "units"}
    assert not any("dollars" in v.description or "many" in v.description for v in err.violations)


def test_as_agent_error_keeps_server_directed_delay() -> None:
    err = as_agent_error(status_error(429, headers={"retry-after": "12"}))
    assert err.retry_after == 12.0


def test_as_agent_error_rebuilds_grpc_errors() -> None:
    err = as_agent_error(rpc_error(grpc.StatusCode.NOT_FOUND))
    assert isinstance(err, NotFoundError)


def test_truncated_llm_answer_wraps_as_llm_fixable() -> None:
    completion = truncated_completion()
    assert isinstance(
        as_agent_error(openai.LengthFinishReasonError(completion=completion)), LLMFixableError
    )


# --- error_code -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConflictError("x"), "ABORTED"),
        (rpc_error(grpc.StatusCode.UNAVAILABLE), "UNAVAILABLE"),
        (status_error(429), "429"),
        (via_sqlalchemy_asyncpg(pg.SerializationError("x")), "40001"),
        (ConnectionResetError(), "ConnectionResetError"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_error_code_names_the_failure(exc: BaseException, code: str) -> None:
    assert error_code(exc) == code
