"""grpc.aio server interceptors: call context, metrics, canonical log line, errors, auth.

Each interceptor wraps the behaviour of the method handler it is given (all
four kinds: unary and streaming, including coroutine handlers that use
``context.write``) in an async context manager, its *scope*. The server
installs them outermost first::

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
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
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

    @asynccontextmanager
    async def scope(self, method: str, kind: str, context: Context) -> AsyncIterator[None]:
        given = _metadata_value(context.invocation_metadata(), REQUEST_ID_KEY)
        request_id = given if given and _REQUEST_ID_OK.match(given) else new_request_id()
        remaining = context.time_remaining()
        call = CallInfo(
            method=method,
            grpc_type=kind,
            request_id=request_id,
            peer=context.peer() or "",
            deadline=None if remaining is None else time.monotonic() + remaining,
        )
        call_token = set_current_call(call)
        log_tokens = structlog.contextvars.bind_contextvars(request_id=request_id, method=method)
        try:
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            yield
        finally:
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

    def wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        if method.startswith(_QUIET_METHODS):
            return handler
        return super().wrap(handler, method)

    @asynccontextmanager
    async def scope(self, method: str, kind: str, context: Context) -> AsyncIterator[None]:
        call = _call_for(method, kind)
        carrier = {
            key: value
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)
        }
        attributes = {
            "rpc.system": "grpc",
            "rpc.service": call.service,
            "rpc.method": call.method_name,
            "rpc.grpc.type": kind,
            "marketplace.request_id": call.request_id,
        }
        error: BaseException | None = None
        with self.tracer.start_as_current_span(
            method.lstrip("/"),
            context=tracing.extract(carrier),
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except BaseException as exc:
                error = exc
                raise
            finally:
                code = outcome_code(context, error, call)
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code in _SERVER_SPAN_ERRORS:
                    span.set_status(Status(StatusCode.ERROR, code.name))


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

    @asynccontextmanager
    async def scope(self, method: str, kind: str, context: Context) -> AsyncIterator[None]:
        call = _call_for(method, kind)
        series = self.metrics.method(kind, call.service, call.method_name)
        series.started.inc()
        unary_request = kind in ("unary", "server_stream")
        unary_response = kind in ("unary", "client_stream")
        if unary_request:
            series.received.inc()
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            code = outcome_code(context, error, call)
            if unary_response and code is grpc.StatusCode.OK:
                series.sent.inc()
            series.handled_with(code).inc()
            series.seconds.observe(time.perf_counter() - started)


class AccessLogInterceptor(ScopedInterceptor):
    """Writes one canonical ``rpc.handled`` line per RPC.

    Fields: method, grpc_type, code, duration_ms, peer, request_id (bound),
    principal and role. Server faults (INTERNAL, UNKNOWN, DATA_LOSS) log at
    error level; health and reflection at debug, so probes do not flood the log.
    """

    def __init__(self, logger: Any = None) -> None:
        self.log = logger if logger is not None else get_logger("marketplace.rpc")

    @asynccontextmanager
    async def scope(self, method: str, kind: str, context: Context) -> AsyncIterator[None]:
        call = _call_for(method, kind)
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            code = outcome_code(context, error, call)
            self._emit(call, code, (time.perf_counter() - started) * 1000.0)

    def _emit(self, call: CallInfo, code: grpc.StatusCode, duration_ms: float) -> None:
        if code in _SERVER_FAULT_CODES:
            emit = self.log.error
        elif call.method.startswith(_QUIET_METHODS):
            emit = self.log.debug
        else:
            emit = self.log.info
        principal = call.principal
        emit(
            "rpc.handled",
            method=call.method,
            grpc_type=call.grpc_type,
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

    @asynccontextmanager
    async def scope(self, method: str, kind: str, context: Context) -> AsyncIterator[None]:
        try:
            yield
        except grpc.aio.AbortError:
            raise
        except AgentError as err:
            if err.error_type is ErrorType.FATAL:
                self.log.exception("rpc.fatal_error", error=repr(err))
            await self._abort(context, err)
        except Exception as exc:
            mapped = as_agent_error(exc)
            self.log.exception(
                "rpc.unexpected_error",
                error_class=type(exc).__name__,
                error_type=mapped.error_type.value,
            )
            await self._abort(context, mapped)

    async def _abort(self, context: Context, err: AgentError) -> None:
        status = to_rpc_status(err, self.domain)
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

    @asynccontextmanager
    async def scope(self, method: str, kind: str, context: Context) -> AsyncIterator[None]:
        principal = self._principal(method, context)
        call = current_call()
        if call is not None:
            call.principal = principal
        token = set_current_principal(principal)
        try:
            yield
        finally:
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
