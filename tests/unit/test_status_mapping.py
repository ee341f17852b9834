"""The mapping tables of docs/errors.md, both ways, and the round trip over a real aio server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from marketplace_common.errors import (
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
)
from marketplace_common.status import (
    DEFAULT_RETRY_DELAY,
    DETAILS_METADATA_KEY,
    RETRY_PUSHBACK_METADATA_KEY,
    abort_with_error,
    code_for,
    from_rpc_error,
    to_rpc_status,
    to_status_proto,
)

DOMAIN = "bids.marketplace"
C = grpc.StatusCode
VIOLATIONS = (
    FieldViolation("budget.currency_code", "must be an ISO-4217 code"),
    FieldViolation("client_email", "not an e-mail address"),
)


class BidNotFoundError(NotFoundError):
    default_reason = "BID_NOT_FOUND"


class PlainTransientError(AgentError):
    """Derives from AgentError directly: its code falls back to its type."""

    error_type = ErrorType.TRANSIENT


# --- server side: kind -> code ----------------------------------------------------

SERVER_ROWS: list[tuple[type[AgentError], grpc.StatusCode]] = [
    (UnavailableError, C.UNAVAILABLE),
    (ConflictError, C.ABORTED),
    (RateLimitedError, C.RESOURCE_EXHAUSTED),
    (DeadlineExceededError, C.DEADLINE_EXCEEDED),
    (InvalidArgumentError, C.INVALID_ARGUMENT),
    (NotFoundError, C.NOT_FOUND),
    (AlreadyExistsError, C.ALREADY_EXISTS),
    (FailedPreconditionError, C.FAILED_PRECONDITION),
    (UnauthenticatedError, C.UNAUTHENTICATED),
    (PermissionDeniedError, C.PERMISSION_DENIED),
    (OutOfRangeError, C.OUT_OF_RANGE),
    (LLMOutputInvalidError, C.FAILED_PRECONDITION),
    (LLMFixableError, C.FAILED_PRECONDITION),
    (InternalError, C.INTERNAL),
    (DataLossError, C.DATA_LOSS),
    (TransientError, C.UNAVAILABLE),
    (PermanentError, C.FAILED_PRECONDITION),
    (FatalError, C.INTERNAL),
    (AgentError, C.INTERNAL),
    (BidNotFoundError, C.NOT_FOUND),
    (PlainTransientError, C.UNAVAILABLE),
]


def _details(err: AgentError) -> list[Any]:
    proto = to_status_proto(err, DOMAIN)
    found: list[Any] = []
    for any_ in proto.details:
        for cls in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.RetryInfo,
            error_details_pb2.BadRequest,
        ):
            if any_.Is(cls.DESCRIPTOR):
                msg = cls()
                any_.Unpack(msg)
                found.append(msg)
    assert len(found) == len(proto.details), "unexpected detail type"
    return found


def _of(details: list[Any], cls: type) -> list[Any]:
    return [d for d in details if isinstance(d, cls)]


@pytest.mark.parametrize(("kind", "code"), SERVER_ROWS, ids=lambda v: getattr(v, "__name__", v))
def test_kind_maps_to_its_code(kind: type[AgentError], code: grpc.StatusCode) -> None:
    status = to_rpc_status(kind("boom"), DOMAIN)
    assert status.code is code
    assert code_for(kind("boom")) is code


@pytest.mark.parametrize("kind", [k for k, _ in SERVER_ROWS], ids=lambda k: k.__name__)
def test_status_has_exactly_one_error_info_with_reason_domain_and_type(
    kind: type[AgentError],
) -> None:
    err = kind("boom", metadata={"bidId": "b-1"})
    infos = _of(_details(err), error_details_pb2.ErrorInfo)
    assert len(infos) == 1
    assert infos[0].reason == err.reason
    assert infos[0].domain == DOMAIN
    assert dict(infos[0].metadata) == {"errorType": err.error_type.value, "bidId": "b-1"}


@pytest.mark.parametrize("kind", [k for k, _ in SERVER_ROWS], ids=lambda k: k.__name__)
def test_retry_info_only_for_transient(kind: type[AgentError]) -> None:
    err = kind("boom")
    retry_infos = _of(_details(err), error_details_pb2.RetryInfo)
    assert len(retry_infos) == (1 if err.error_type is ErrorType.TRANSIENT else 0)


def test_retry_info_carries_retry_after() -> None:
    (info,) = _of(
        _details(RateLimitedError("slow down", retry_after=2.5)), error_details_pb2.RetryInfo
    )
    assert info.retry_delay.ToNanoseconds() == 2_500_000_000


def test_retry_info_defaults_when_no_retry_after() -> None:
    (info,) = _of(_details(ConflictError("conflict")), error_details_pb2.RetryInfo)
    assert info.retry_delay.ToNanoseconds() / 1e9 == DEFAULT_RETRY_DELAY


def test_pushback_metadata_only_when_retry_after_is_given() -> None:
    with_delay = dict(
        to_rpc_status(UnavailableError("x", retry_after=0.25), DOMAIN).trailing_metadata
    )
    without = dict(to_rpc_status(UnavailableError("x"), DOMAIN).trailing_metadata)
    assert with_delay[RETRY_PUSHBACK_METADATA_KEY] == "250"
    assert RETRY_PUSHBACK_METADATA_KEY not in without


def test_bad_request_lists_every_violation() -> None:
    err = InvalidArgumentError("invalid", violations=VIOLATIONS)
    (bad_request,) = _of(_details(err), error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        (v.field, v.description) for v in VIOLATIONS
    ]


def test_no_bad_request_without_violations() -> None:
    assert _of(_details(NotFoundError("gone")), error_details_pb2.BadRequest) == []


def test_llm_fixable_budget_spent_is_failed_precondition_with_last_violations() -> None:
    err = LLMOutputInvalidError("invalid output", violations=VIOLATIONS[:1])
    status = to_rpc_status(err, DOMAIN)
    details = _details(err)
    assert status.code is C.FAILED_PRECONDITION
    assert _of(details, error_details_pb2.ErrorInfo)[0].reason == "LLM_OUTPUT_INVALID"
    assert len(_of(details, error_details_pb2.BadRequest)[0].field_violations) == 1


@pytest.mark.parametrize("kind", [InternalError, DataLossError, FatalError, AgentError])
def test_fatal_message_is_generic(kind: type[AgentError]) -> None:
    status = to_rpc_status(kind("SELECT * FROM bids WHERE hash='abc' failed"), DOMAIN)
    assert "SELECT" not in status.details
    assert "abc" not in status.details
    assert status.details


def test_non_fatal_message_is_kept() -> None:
    assert to_rpc_status(NotFoundError("bid b-1 not found"), DOMAIN).details == "bid b-1 not found"


def test_status_proto_matches_code_and_message() -> None:
    status = to_rpc_status(ConflictError("conflict"), DOMAIN)
    proto = status_pb2.Status.FromString(dict(status.trailing_metadata)[DETAILS_METADATA_KEY])
    assert proto.code == C.ABORTED.value[0]
    assert proto.message == status.details


# --- client side: code -> type, without ErrorInfo ----------------------------------


def _rpc_error(
    code: grpc.StatusCode,
    *,
    details: str = "failed",
    trailing: tuple[tuple[str, str | bytes], ...] = (),
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details, None
    )


def _retry_info_trailer(seconds: float) -> tuple[str, bytes]:
    proto = status_pb2.Status(code=C.RESOURCE_EXHAUSTED.value[0], message="failed")
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromNanoseconds(int(seconds * 1e9))
    proto.details.add().Pack(info)
    return (DETAILS_METADATA_KEY, proto.SerializeToString())


CLIENT_ROWS: list[tuple[grpc.StatusCode, ErrorType, type[AgentError]]] = [
    (C.UNAVAILABLE, ErrorType.TRANSIENT, UnavailableError),
    (C.ABORTED, ErrorType.TRANSIENT, ConflictError),
    (C.DEADLINE_EXCEEDED, ErrorType.TRANSIENT, DeadlineExceededError),
    (C.RESOURCE_EXHAUSTED, ErrorType.PERMANENT, RateLimitedError),
    (C.INTERNAL, ErrorType.FATAL, InternalError),
    (C.DATA_LOSS, ErrorType.FATAL, DataLossError),
    (C.UNKNOWN, ErrorType.FATAL, InternalError),
    (C.INVALID_ARGUMENT, ErrorType.PERMANENT, InvalidArgumentError),
    (C.NOT_FOUND, ErrorType.PERMANENT, NotFoundError),
    (C.ALREADY_EXISTS, ErrorType.PERMANENT, AlreadyExistsError),
    (C.FAILED_PRECONDITION, ErrorType.PERMANENT, FailedPreconditionError),
    (C.UNAUTHENTICATED, ErrorType.PERMANENT, UnauthenticatedError),
    (C.PERMISSION_DENIED, ErrorType.PERMANENT, PermissionDeniedError),
    (C.OUT_OF_RANGE, ErrorType.PERMANENT, OutOfRangeError),
    (C.CANCELLED, ErrorType.PERMANENT, PermanentError),
    (C.UNIMPLEMENTED, ErrorType.PERMANENT, PermanentError),
]


@pytest.mark.parametrize(("code", "error_type", "kind"), CLIENT_ROWS, ids=lambda v: str(v))
def test_client_rule_without_error_info(
    code: grpc.StatusCode, error_type: ErrorType, kind: type[AgentError]
) -> None:
    err = from_rpc_error(_rpc_error(code))
    assert err.error_type is error_type
    assert type(err) is kind
    assert err.reason == code.name


def test_resource_exhausted_with_retry_info_is_transient() -> None:
    err = from_rpc_error(_rpc_error(C.RESOURCE_EXHAUSTED, trailing=(_retry_info_trailer(3),)))
    assert err.error_type is ErrorType.TRANSIENT
    assert err.retry_after == 3


def test_deadline_exceeded_is_transient_while_caller_has_time_left() -> None:
    err = from_rpc_error(_rpc_error(C.DEADLINE_EXCEEDED), deadline_remaining=2.0)
    assert err.error_type is ErrorType.TRANSIENT


def test_deadline_exceeded_is_permanent_once_callers_deadline_is_spent() -> None:
    err = from_rpc_error(_rpc_error(C.DEADLINE_EXCEEDED), deadline_remaining=0.0)
    assert err.error_type is ErrorType.PERMANENT
    assert isinstance(err, DeadlineExceededError)


def test_pushback_metadata_gives_retry_after_without_retry_info() -> None:
    err = from_rpc_error(
        _rpc_error(C.UNAVAILABLE, trailing=((RETRY_PUSHBACK_METADATA_KEY, "1500"),))
    )
    assert err.retry_after == 1.5


def test_negative_pushback_is_ignored() -> None:
    err = from_rpc_error(_rpc_error(C.UNAVAILABLE, trailing=((RETRY_PUSHBACK_METADATA_KEY, "-1"),)))
    assert err.retry_after is None


def test_error_type_from_error_info_wins_over_code_rules() -> None:
    status = to_rpc_status(NotFoundError("gone", error_type=ErrorType.TRANSIENT), DOMAIN)
    err = from_rpc_error(
        _rpc_error(C.NOT_FOUND, details=status.details, trailing=status.trailing_metadata)
    )
    assert err.error_type is ErrorType.TRANSIENT
    assert isinstance(err, NotFoundError)


def test_details_that_contradict_the_call_are_ignored() -> None:
    # grpc_status.rpc_status.from_call: the status proto must agree with the
    # call's code and message, else the code rules alone decide.
    status = to_rpc_status(NotFoundError("gone", error_type=ErrorType.TRANSIENT), DOMAIN)
    for code, details in ((C.NOT_FOUND, "rewritten by a proxy"), (C.UNAVAILABLE, "gone")):
        err = from_rpc_error(_rpc_error(code, details=details, trailing=status.trailing_metadata))
        assert err.reason == code.name
        assert err.error_type is (
            ErrorType.PERMANENT if code is C.NOT_FOUND else ErrorType.TRANSIENT
        )


def test_corrupt_details_do_not_raise() -> None:
    err = from_rpc_error(
        _rpc_error(C.UNAVAILABLE, trailing=((DETAILS_METADATA_KEY, b"\xff\x00garbage"),))
    )
    assert err.error_type is ErrorType.TRANSIENT


def test_rpc_error_without_call_methods_is_fatal() -> None:
    err = from_rpc_error(grpc.RpcError())
    assert err.error_type is ErrorType.FATAL
    assert isinstance(err, InternalError)


# --- the round trip over a real server ---------------------------------------------

ROUND_TRIP: dict[str, AgentError] = {
    "unavailable": UnavailableError("db down", retry_after=0.75),
    "conflict": ConflictError("conflict"),
    "rate_limited": RateLimitedError("slow down", retry_after=4.0),
    "deadline": DeadlineExceededError("too slow"),
    "invalid": InvalidArgumentError("bad request", violations=VIOLATIONS),
    "not_found": BidNotFoundError("bid b-1 not found", metadata={"bidId": "b-1"}),
    "already_exists": AlreadyExistsError("exists", reason="BID_ALREADY_ACTIVE"),
    "precondition": FailedPreconditionError("wrong state", reason="INVALID_TRANSITION"),
    "unauthenticated": UnauthenticatedError("who are you"),
    "permission": PermissionDeniedError("not yours"),
    "out_of_range": OutOfRangeError("past the end"),
    "llm_invalid": LLMOutputInvalidError("bad output", violations=VIOLATIONS[:1]),
    "llm_fixable": LLMFixableError("bad output", violations=VIOLATIONS[1:]),
    "internal": InternalError("stack and SQL"),
    "data_loss": DataLossError("hash mismatch for event e-1"),
    "bare_transient": TransientError("flaky"),
    "bare_permanent": PermanentError("nope"),
    "bare_fatal": FatalError("broken"),
}

EXPECTED_KIND: dict[str, type[AgentError]] = {
    "not_found": NotFoundError,
    "bare_transient": UnavailableError,
    "bare_permanent": FailedPreconditionError,
    "bare_fatal": InternalError,
}


async def _raise_named(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    await abort_with_error(context, ROUND_TRIP[request.decode()], DOMAIN)


@pytest.fixture
async def call() -> AsyncIterator[Callable[[str], Any]]:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "test.Errors", {"Raise": grpc.unary_unary_rpc_method_handler(_raise_named)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    method = channel.unary_unary("/test.Errors/Raise", None, None)

    async def invoke(name: str) -> AgentError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await method(name.encode(), timeout=10)
        return from_rpc_error(caught.value, deadline_remaining=5.0)

    yield invoke
    await channel.close(None)
    await server.stop(None)


@pytest.mark.parametrize("name", list(ROUND_TRIP))
async def test_round_trip_keeps_type_kind_reason_and_details(
    call: Callable[[str], Any], name: str
) -> None:
    sent = ROUND_TRIP[name]
    received = await call(name)
    assert received.error_type is sent.error_type
    assert type(received) is EXPECTED_KIND.get(name, type(sent))
    assert received.reason == sent.reason
    assert received.violations == sent.violations
    assert received.metadata == sent.metadata
    if sent.error_type is ErrorType.TRANSIENT:
        expected_delay = DEFAULT_RETRY_DELAY if sent.retry_after is None else sent.retry_after
        assert received.retry_after == pytest.approx(expected_delay)
    else:
        assert received.retry_after is None


async def test_round_trip_hides_fatal_message(call: Callable[[str], Any]) -> None:
    received = await call("data_loss")
    assert "e-1" not in received.message
