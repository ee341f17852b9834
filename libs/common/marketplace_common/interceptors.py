"""grpc.aio server interceptors: call context, metrics, canonical log line, errors, auth.

Each interceptor gives, once per method, a *stage* (``rpc_wrapping.Stage``):
what it does before the handler (``enter``) and after it (``leave``), with
what it needs per method resolved up front (metric series, a logger bound to
the method). The server runs a chain of them (all four handler kinds: unary
and streaming, including coroutine handlers that use ``context.write``) in
one scope per call, outermost first::

    CallContextInterceptor   request id, peer, deadline; structlog contextvars
    TracingInterceptor       a SERVER span (only installed while tracing is on)
    MetricsInterceptor       grpc_server_started/handled_total, handling_seconds
    AccessLogInterceptor     one canonical line per RPC
    ErrorMappingInterceptor  AgentError -> status with details; anything else -> INTERNAL
    AuthInterceptor          bearer token or client certificate -> Principal

so the outer scopes see the final status code, including the ones the error
mapping and auth produce.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
import structlog
from opentelemetry.trace import SpanKind, Status, StatusCode

from marketplace_common import tracing
from marketplace_common.auth import (
    LOCAL_DEV_PRINCIPAL,
    Principal,
    TokenAuthenticator,
    bearer_token,
    is_open_method,
    reset_current_principal,
    set_current_principal,
)
from marketplace_common.auth_cert import CertificatePrincipals
from marketplace_common.classify import as_agent_error
from marketplace_common.errors import (
    AgentError,
    ErrorType,
    FieldViolation,
    InvalidArgumentError,
    UnauthenticatedError,
)
from marketplace_common.logging import get_logger
from marketplace_common.metrics import GrpcServerMetrics
from marketplace_common.rpc_context import (
    REQUEST_ID_KEY,
    CallInfo,
    current_call,
    reset_current_call,
    set_current_call,
    split_method,
)
from marketplace_common.rpc_wrapping import (
    ScopedInterceptor,
    Stage,
    UndecodableRequest,
    count_stream_messages,
    decode_leniently,
    grpc_type,
)
from marketplace_common.status import to_rpc_status

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_SERVER_FAULT_CODES = frozenset(
    {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
)
_QUIET_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _call_for(method: str, kind: str) -> CallInfo:
    """The current CallInfo, or a fresh one when CallContextInterceptor is not installed."""
    call = current_call()
    if call is None or call.method != method:
        call = CallInfo(method=method, grpc_type=kind, request_id=new_request_id())
    return call


# --- outcome of an RPC -----------------------------------------------------------


def _context_code(context: Context) -> grpc.StatusCode | None:
    try:
        code: Any = context.code()
    except (AttributeError, NotImplementedError):
        return None
    if code is None or isinstance(code, grpc.StatusCode):
        return code
    for candidate in grpc.StatusCode:  # some grpc versions report the integer
        if candidate.value[0] == code:
            return candidate
    return None


def outcome_code(context: Context, exc: BaseException | None, call: CallInfo) -> grpc.StatusCode:
    """The status code an RPC ended with, from its context and the exception (if any)."""
    if isinstance(exc, asyncio.CancelledError):
        remaining = call.time_remaining()
        expired = remaining is not None and remaining <= 0
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    code = _context_code(context)
    if code is not None:
        return code
    return grpc.StatusCode.OK if exc is None else grpc.StatusCode.UNKNOWN


# --- the interceptors ------------------------------------------------------------


def new_request_id() -> str:
    """A fresh request id (32 hex digits)."""
    return uuid.uuid4().hex


def _metadata_value(metadata: Iterable[tuple[str, Any]] | None, key: str) -> str | None:
    for k, value in metadata or ():
        if k == key:
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None


class CallContextInterceptor(ScopedInterceptor):
    """Creates the CallInfo of every RPC and binds request_id/method for logging.

    The request id comes from ``x-request-id`` metadata when it looks sane
    (up to 128 of ``[A-Za-z0-9._:-]``), else a new one; it is echoed to the
    caller in the *trailing* metadata (also on errors the error mapping
    produces). Not in the initial metadata: sending headers early commits
    the RPC, and gRPC then never retries it (the channels' UNAVAILABLE
    retry policy would stop working). The caller's deadline is recorded so
    downstream calls can inherit it (``client.call_timeout``).
    """

    def stage(self, method: str, kind: str) -> Stage:
        return _CallContextStage(method, kind)


class _CallContextStage(Stage):
    __slots__ = ("kind", "method")

    def __init__(self, method: str, kind: str) -> None:
        self.method = method
        self.kind = kind

    def enter(self, context: Context, request: Any) -> Any:
        given = _metadata_value(context.invocation_metadata(), REQUEST_ID_KEY)
        request_id = given if given and _REQUEST_ID_OK.match(given) else new_request_id()
        remaining = context.time_remaining()
        call = CallInfo(
            method=self.method,
            grpc_type=self.kind,
            request_id=request_id,
            peer=context.peer() or "",
            deadline=None if remaining is None else time.monotonic() + remaining,
        )
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        call_token = set_current_call(call)
        log_tokens = structlog.contextvars.bind_contextvars(
            request_id=request_id, method=self.method
        )
        return call_token, log_tokens

    def leave(self, context: Context, token: Any, error: BaseException | None) -> None:
        if token is None:
            return
        call_token, log_tokens = token
        with contextlib.suppress(ValueError):  # finalised outside the RPC's context
            structlog.contextvars.reset_contextvars(**log_tokens)
        reset_current_call(call_token)


# OpenTelemetry's RPC conventions: the codes that make a *server* span an error.
_SERVER_SPAN_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class TracingInterceptor(ScopedInterceptor):
    """One SERVER span per RPC, child of the caller's span (``traceparent`` metadata).

    Named ``pkg.Service/Method`` with the ``rpc.*`` attributes of OpenTelemetry's
    conventions, ``rpc.grpc.status_code`` and the request id. The chain installs it
    right after CallContextInterceptor, only while tracing is on, so every log line
    of the RPC (the canonical ``rpc.handled`` one included) carries its ids.
    Health and reflection are not traced: a probe every few seconds would make a
    trace each and bury the service's own. (opentelemetry-instrumentation-grpc's aio
    server interceptor iterates every response-streaming behaviour with ``async for``,
    which fails for handlers that write with ``context.write``, such as health's
    Watch; this one uses the project's handler wrapping, which handles all kinds.)
    """

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer

    def stage(self, method: str, kind: str) -> Stage | None:
        if method.startswith(_QUIET_METHODS):
            return None
        return _TracingStage(self.tracer, method, kind)


class _TracingStage(Stage):
    __slots__ = ("kind", "method", "name", "tracer")

    def __init__(self, tracer: Any, method: str, kind: str) -> None:
        self.tracer = tracer
        self.method = method
        self.kind = kind
        self.name = method.lstrip("/")

    def enter(self, context: Context, request: Any) -> Any:
        call = _call_for(self.method, self.kind)
        carrier = {
            key: value
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)
        }
        attributes = {
            "rpc.system": "grpc",
            "rpc.service": call.service,
            "rpc.method": call.method_name,
            "rpc.grpc.type": self.kind,
            "marketplace.request_id": call.request_id,
        }
        span_scope = self.tracer.start_as_current_span(
            self.name,
            context=tracing.extract(carrier),
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        span = span_scope.__enter__()
        return span_scope, span, call

    def leave(self, context: Context, token: Any, error: BaseException | None) -> None:
        if token is None:
            return
        span_scope, span, call = token
        try:
            code = outcome_code(context, error, call)
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code in _SERVER_SPAN_ERRORS:
                span.set_status(Status(StatusCode.ERROR, code.name))
        finally:
            if error is None:
                span_scope.__exit__(None, None, None)
            else:
                span_scope.__exit__(type(error), error, error.__traceback__)


class MetricsInterceptor(ScopedInterceptor):
    """Counts and times every RPC and its messages (see ``marketplace_common.metrics``).

    A unary request counts as one message received when the call starts, a unary
    response as one message sent when the call ends OK (as go-grpc-prometheus
    does); streamed messages are counted one by one (``count_stream_messages``).
    """

    def __init__(self, metrics: GrpcServerMetrics) -> None:
        self.metrics = metrics

    def adapt(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        if not (handler.request_streaming or handler.response_streaming):
            return handler
        service, name = split_method(method)
        series = self.metrics.method(grpc_type(handler), service, name)
        return count_stream_messages(handler, series.received.inc, series.sent.inc)

    def stage(self, method: str, kind: str) -> Stage:
        service, name = split_method(method)
        return _MetricsStage(self.metrics.method(kind, service, name), method, kind)


class _MetricsStage(Stage):
    """The method's series, looked up once (labels cost more than the increments)."""

    __slots__ = ("kind", "method", "series", "unary_request", "unary_response")

    def __init__(self, series: Any, method: str, kind: str) -> None:
        self.series = series
        self.method = method
        self.kind = kind
        self.unary_request = kind in ("unary", "server_stream")
        self.unary_response = kind in ("unary", "client_stream")

    def enter(self, context: Context, request: Any) -> Any:
        series = self.series
        series.started.inc()
        if self.unary_request:
            series.received.inc()
        return time.perf_counter()

    def leave(self, context: Context, token: Any, error: BaseException | None) -> None:
        if token is None:
            return
        series = self.series
        code = outcome_code(context, error, _call_for(self.method, self.kind))
        if self.unary_response and code is grpc.StatusCode.OK:
            series.sent.inc()
        series.handled_with(code).inc()
        series.seconds.observe(time.perf_counter() - token)


class AccessLogInterceptor(ScopedInterceptor):
    """Writes one canonical ``rpc.handled`` line per RPC.

    Fields: method, grpc_type, code, duration_ms, peer, request_id (bound),
    principal and role. Server faults (INTERNAL, UNKNOWN, DATA_LOSS) log at
    error level; health and reflection at debug, so probes do not flood the log.
    """

    def __init__(self, logger: Any = None) -> None:
        self.log = logger if logger is not None else get_logger("marketplace.rpc")

    def stage(self, method: str, kind: str) -> Stage:
        return _AccessLogStage(self.log, method, kind)


class _AccessLogStage(Stage):
    """The canonical line of one method, its logger bound to the method once.

    The logger is resolved once and again only when structlog is configured
    anew (``get_logger``'s loggers are lazy proxies that would build a bound
    logger on every call).
    """

    __slots__ = ("_bound", "_config", "kind", "log", "method", "quiet")

    def __init__(self, log: Any, method: str, kind: str) -> None:
        self.log = log
        self.method = method
        self.kind = kind
        self.quiet = method.startswith(_QUIET_METHODS)
        self._config: tuple[Any, ...] = ()
        self._bound: Any = None

    def _logger(self) -> Any:
        config = structlog.get_config()
        key = (config["processors"], config["wrapper_class"], config["logger_factory"])
        if self._bound is None or any(a is not b for a, b in zip(key, self._config, strict=True)):
            self._bound = self.log.bind(method=self.method, grpc_type=self.kind)
            self._config = key
        return self._bound

    def enter(self, context: Context, request: Any) -> Any:
        return time.perf_counter()

    def leave(self, context: Context, token: Any, error: BaseException | None) -> None:
        if token is None:
            return
        duration_ms = (time.perf_counter() - token) * 1000.0
        call = _call_for(self.method, self.kind)
        code = outcome_code(context, error, call)
        log = self._logger()
        if code in _SERVER_FAULT_CODES:
            emit = log.error
        elif self.quiet:
            emit = log.debug
        else:
            emit = log.info
        principal = call.principal
        emit(
            "rpc.handled",
            code=code.name,
            duration_ms=round(duration_ms, 3),
            peer=call.peer,
            request_id=call.request_id,
            principal=principal.subject if principal else None,
            role=principal.role.value if principal else None,
        )


class ErrorMappingInterceptor(ScopedInterceptor):
    """Ends an RPC that raised with a proper status.

    * ``AgentError``: its status (code, safe message, ErrorInfo with
      ``domain``, RetryInfo, BadRequest) from ``status.to_rpc_status``, plus
      the request id in the trailing metadata.
    * Anything else: ``classify.as_agent_error`` (INTERNAL with a safe
      message for our own bugs), the stack logged at error level.
    * A request body that is not a valid message for the method: INVALID_ARGUMENT
      with a ``request`` field violation (grpc itself would answer UNKNOWN). Like
      grpc's own decoding, this comes before authentication.
    * ``context.abort`` and cancellation pass through untouched.
    """

    def __init__(self, domain: str, logger: Any = None) -> None:
        self.domain = domain
        self.log = logger if logger is not None else get_logger("marketplace.rpc")

    def adapt(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        return decode_leniently(handler, _undecodable)

    def stage(self, method: str, kind: str) -> Stage:
        return _ErrorMappingStage(self)


class _ErrorMappingStage(Stage):
    __slots__ = ("owner",)
    recovers = True

    def __init__(self, owner: ErrorMappingInterceptor) -> None:
        self.owner = owner

    def enter(self, context: Context, request: Any) -> Any:
        # Like grpc's own decoding, before authentication (the inner stage).
        if isinstance(request, UndecodableRequest):
            raise _undecodable(request)
        return None

    async def recover(self, context: Context, error: Exception) -> None:
        if isinstance(error, grpc.aio.AbortError):
            raise error
        log = self.owner.log
        if isinstance(error, AgentError):
            if error.error_type is ErrorType.FATAL:
                log.error("rpc.fatal_error", error=repr(error), exc_info=error)
            await self._abort(context, error)
        mapped = as_agent_error(error)
        log.error(
            "rpc.unexpected_error",
            error_class=type(error).__name__,
            error_type=mapped.error_type.value,
            exc_info=error,
        )
        await self._abort(context, mapped)

    async def _abort(self, context: Context, err: AgentError) -> None:
        status = to_rpc_status(err, self.owner.domain)
        trailing = list(status.trailing_metadata)
        call = current_call()
        if call is not None:  # abort replaces the trailing metadata set earlier
            trailing.append((REQUEST_ID_KEY, call.request_id))
        await context.abort(status.code, status.details, tuple(trailing))


def _undecodable(request: UndecodableRequest) -> InvalidArgumentError:
    violation = FieldViolation("request", "not a valid protobuf message for this method")
    return InvalidArgumentError("the request body could not be decoded", violations=[violation])


class AuthInterceptor(ScopedInterceptor):
    """Authenticates every RPC and binds its principal (``auth.current_principal``).

    A bearer token, when the call carries one, decides; without one, a
    verified client certificate mapped to a principal (``auth_cert``) does.
    Health and reflection stay open (valid credentials there still name the
    caller). With neither tokens nor certificate principals configured, every
    caller is the local development principal; the server only allows that on
    loopback.
    """

    def __init__(
        self,
        authenticator: TokenAuthenticator,
        certificates: CertificatePrincipals | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.certificates = certificates or CertificatePrincipals()

    @property
    def enabled(self) -> bool:
        """True when some credential is configured (else: local development)."""
        return self.authenticator.enabled or self.certificates.enabled

    def _principal(self, method: str, context: Context) -> Principal | None:
        if not self.enabled:
            return LOCAL_DEV_PRINCIPAL
        metadata = [(k, v) for k, v in context.invocation_metadata() or ()]
        token = bearer_token(metadata)
        if token is not None:
            found = self.authenticator.authenticate_token(token)
            if found is None and not is_open_method(method):
                raise UnauthenticatedError("invalid bearer token")
            return found
        if self.certificates.enabled:
            found = self.certificates.authenticate(context.auth_context() or {})
            if found is not None:
                return found
        if is_open_method(method):
            return None
        if self.certificates.enabled:
            raise UnauthenticatedError(
                "missing credentials (authorization: Bearer <token>, or a client "
                "certificate mapped to a principal)"
            )
        raise UnauthenticatedError("missing bearer token (authorization: Bearer <token>)")

    def stage(self, method: str, kind: str) -> Stage:
        return _AuthStage(self, method)


class _AuthStage(Stage):
    __slots__ = ("method", "owner")

    def __init__(self, owner: AuthInterceptor, method: str) -> None:
        self.owner = owner
        self.method = method

    def enter(self, context: Context, request: Any) -> Any:
        principal = self.owner._principal(self.method, context)
        call = current_call()
        if call is not None:
            call.principal = principal
        return set_current_principal(principal)

    def leave(self, context: Context, token: Any, error: BaseException | None) -> None:
        if token is None:
            return
        with contextlib.suppress(ValueError):  # finalised outside the RPC's context
            reset_current_principal(token)


def default_interceptors(
    *,
    domain: str,
    authenticator: TokenAuthenticator,
    metrics: GrpcServerMetrics,
    logger: Any = None,
    certificates: CertificatePrincipals | None = None,
) -> list[grpc.aio.ServerInterceptor]:  # type: ignore[type-arg]
    """The server's interceptor chain, outermost first (tracing only while it is on)."""
    tracer = tracing.tracer()
    traced = [] if tracer is None else [TracingInterceptor(tracer)]
    return [
        CallContextInterceptor(),
        *traced,
        MetricsInterceptor(metrics),
        AccessLogInterceptor(logger),
        ErrorMappingInterceptor(domain, logger),
        AuthInterceptor(authenticator, certificates),
    ]
