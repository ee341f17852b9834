"""grpc.aio client channels: keepalive, transparent retries, auth, deadline propagation.

::

    channel = create_channel(settings.bids_target, token=settings.bids_token.get_secret_value())
    stub = bids_pb2_grpc.BidServiceStub(channel)
    task = await stub.GetTask(request, timeout=call_timeout(5.0))

Every call through the channel carries ``authorization: Bearer <token>``
(when a token is given) and, inside a server RPC, that RPC's
``x-request-id`` (outside one, the id ``rpc_context.bind_request_id`` bound); its
timeout is clamped to what is left of the current RPC's deadline, so a caller's
deadline flows downstream. While tracing is on, each call is a CLIENT span whose
context travels in the metadata (``traceparent``), so the server's span is its child.

TLS: ``ClientTls.from_files(ca, cert, key)`` (the CA that signed the server's
certificate; a client certificate and key for mutual TLS) passed as ``tls=``.

Load balancing: the channel's policy is ``round_robin`` by default. With a
``dns:///bids-headless:50051`` target (a Kubernetes headless Service, every
pod an address) each call goes to the next ready address; a plain
``host:port`` that resolves to one address behaves as before. The DNS
resolver looks again when a connection closes, so servers with a maximum
connection age (``<PREFIX>_MAX_CONNECTION_AGE_SECONDS``) let clients find new
replicas.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import grpc
import grpc.aio
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from marketplace_common import tracing
from marketplace_common.rpc_context import REQUEST_ID_KEY, current_call, outgoing_request_id

DEADLINE_MARGIN_SECONDS = 0.05
# Never hand gRPC a zero or negative timeout: a tiny one fails fast as DEADLINE_EXCEEDED.
_MIN_TIMEOUT = 0.001


LoadBalancing = Literal["round_robin", "pick_first"]


class TlsConfigError(ValueError):
    """A TLS file named by a setting is missing, unreadable or not PEM."""


def read_pem(path: Path, setting: str) -> bytes:
    """The bytes of a PEM file; TlsConfigError naming ``setting`` when it is not one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise TlsConfigError(f"{setting}: {path} is not a PEM file")
    return data


@dataclass(frozen=True, slots=True)
class ClientTls:
    """What a TLS channel needs: the roots that verify the server (None: the
    system's), and for mutual TLS the client's certificate chain and key."""

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise TlsConfigError("a client certificate and its key go together")

    @classmethod
    def from_files(
        cls,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        *,
        setting_prefix: str = "",
    ) -> ClientTls:
        """Read the PEM files; errors name ``<setting_prefix>TLS_CA_FILE`` and so on."""

        def read(path: Path | None, name: str) -> bytes | None:
            return None if path is None else read_pem(path, f"{setting_prefix}{name}")

        return cls(
            root_certificates=read(ca_file, "TLS_CA_FILE"),
            certificate_chain=read(cert_file, "TLS_CERT_FILE"),
            private_key=read(key_file, "TLS_KEY_FILE"),
        )

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


def retry_service_config(
    *,
    max_attempts: int = 4,
    initial_backoff: float = 0.1,
    max_backoff: float = 2.0,
    backoff_multiplier: float = 2.0,
    load_balancing: LoadBalancing = "round_robin",
) -> str:
    """gRPC service config JSON: retry UNAVAILABLE on every method, with throttling,
    and the load balancing policy.

    gRPC honours ``grpc-retry-pushback-ms`` from the server on top of this.
    """
    config = {
        "loadBalancingConfig": [{load_balancing: {}}],
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": max_attempts,
                    "initialBackoff": f"{initial_backoff}s",
                    "maxBackoff": f"{max_backoff}s",
                    "backoffMultiplier": backoff_multiplier,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
        "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
    }
    return json.dumps(config)


def channel_options(
    *,
    max_message_bytes: int = 4 * 1024 * 1024,
    keepalive_time_seconds: float = 30.0,
    keepalive_timeout_seconds: float = 10.0,
    max_attempts: int = 4,
    load_balancing: LoadBalancing = "round_robin",
) -> list[tuple[str, Any]]:
    """Default channel arguments: keepalive, message sizes, retries and load balancing.

    The keepalive interval stays above the server's minimum client ping
    interval (10 s by default) so the server never answers too_many_pings.
    """
    return [
        ("grpc.keepalive_time_ms", round(keepalive_time_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", round(keepalive_timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.enable_retries", 1),
        (
            "grpc.service_config",
            retry_service_config(max_attempts=max_attempts, load_balancing=load_balancing),
        ),
    ]


def call_timeout(default: float, *, margin: float = DEADLINE_MARGIN_SECONDS) -> float:
    """The timeout for a downstream call: ``default``, or less if the current RPC ends sooner.

    Inside a server RPC with a deadline, the result is at most the time left
    minus ``margin`` (never below a millisecond, so a spent deadline fails
    fast instead of hanging).
    """
    call = current_call()
    remaining = None if call is None else call.time_remaining()
    if remaining is None:
        return default
    return max(min(default, remaining - margin), _MIN_TIMEOUT)


def call_metadata(token: str | None = None) -> list[tuple[str, str]]:
    """Metadata for an outgoing call: the bearer token and the current request id."""
    metadata: list[tuple[str, str]] = []
    if token:
        metadata.append(("authorization", f"Bearer {token}"))
    request_id = outgoing_request_id()
    if request_id is not None:
        metadata.append((REQUEST_ID_KEY, request_id))
    return metadata


def _merge_metadata(existing: Any, extra: Sequence[tuple[str, str]]) -> grpc.aio.Metadata:
    merged = grpc.aio.Metadata(*(tuple(existing) if existing else ()))
    for key, value in extra:
        if key not in merged:
            merged.add(key, value)
    return merged


# The stubs make the interceptor bases generic; at runtime they are not subscriptable.
if TYPE_CHECKING:
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
    _StreamUnary = grpc.aio.StreamUnaryClientInterceptor[Any, Any]
    _StreamStream = grpc.aio.StreamStreamClientInterceptor[Any, Any]
else:
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor
    _StreamUnary = grpc.aio.StreamUnaryClientInterceptor
    _StreamStream = grpc.aio.StreamStreamClientInterceptor


class OutgoingCallInterceptor(_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream):
    """Adds auth and request-id metadata and clamps timeouts to the current RPC's deadline.

    A plaintext channel refuses call credentials, so the token travels as
    metadata added here (on TLS channels too, for one code path).
    ``default_timeout`` applies to calls made without a timeout (None: none).
    """

    def __init__(self, token: str | None = None, default_timeout: float | None = None) -> None:
        self._token = token
        self._default_timeout = default_timeout

    def _details(
        self, details: grpc.aio.ClientCallDetails, span: Span | None = None
    ) -> grpc.aio.ClientCallDetails:
        timeout = details.timeout if details.timeout is not None else self._default_timeout
        call = current_call()
        if call is not None and call.deadline is not None:
            timeout = call_timeout(timeout if timeout is not None else float("inf"))
        extra = call_metadata(self._token)
        if span is not None:
            carrier: dict[str, str] = {}
            tracing.inject(carrier, span)
            extra.extend(carrier.items())
        return grpc.aio.ClientCallDetails(
            method=details.method,
            timeout=timeout,
            metadata=_merge_metadata(details.metadata, extra),
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )

    async def _traced(
        self, continuation: Any, details: grpc.aio.ClientCallDetails, body: Any
    ) -> Any:
        tracer = tracing.tracer()
        if tracer is None:
            return await continuation(self._details(details), body)
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        service, _, name = method.lstrip("/").partition("/")
        span = tracer.start_span(
            method.lstrip("/"),
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
        try:
            call = await continuation(self._details(details, span), body)
        except BaseException:
            span.set_status(Status(StatusCode.ERROR, "the call could not start"))
            span.end()
            raise
        call.add_done_callback(lambda done: _end_when_done(span, done))
        return call

    # Tracing off (the default), each method is the code path of before tracing plus
    # one global read: no extra coroutine frame (docs/observability.md, the bench).
    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        if tracing.tracer() is None:
            return await continuation(self._details(client_call_details), request)
        return await self._traced(continuation, client_call_details, request)

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        if tracing.tracer() is None:
            return await continuation(self._details(client_call_details), request)
        return await self._traced(continuation, client_call_details, request)

    async def intercept_stream_unary(
        self,
        continuation: Any,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        if tracing.tracer() is None:
            return await continuation(self._details(client_call_details), request_iterator)
        return await self._traced(continuation, client_call_details, request_iterator)

    async def intercept_stream_stream(
        self,
        continuation: Any,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        if tracing.tracer() is None:
            return await continuation(self._details(client_call_details), request_iterator)
        return await self._traced(continuation, client_call_details, request_iterator)


_ending: set[asyncio.Task[None]] = set()


def _end_when_done(span: Span, call: Any) -> None:
    """A done call's callback: end its CLIENT span with the call's status code.

    The code is a coroutine in grpc.aio (immediate for a done call), so a task reads it.
    """

    async def end() -> None:
        try:
            code = await call.code()
        except BaseException:
            code = grpc.StatusCode.CANCELLED
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, code.name))
        span.end()

    task = asyncio.get_running_loop().create_task(end())
    _ending.add(task)
    task.add_done_callback(_ending.discard)


def create_channel(
    target: str,
    *,
    token: str | None = None,
    tls: bool | ClientTls = False,
    root_certificates: bytes | None = None,
    client_cert: bytes | None = None,
    client_key: bytes | None = None,
    server_name: str | None = None,
    load_balancing: LoadBalancing = "round_robin",
    default_timeout: float | None = None,
    options: Sequence[tuple[str, Any]] | None = None,
    interceptors: Sequence[Any] = (),
) -> grpc.aio.Channel:
    """A grpc.aio channel to ``target`` with the project's defaults.

    Args:
        target: ``host:port``, or any gRPC name such as ``dns:///host:port``
            (every address the name resolves to) or ``ipv4:a:p,b:q``.
        token: raw bearer token sent on every call.
        tls: True, or a ClientTls, for TLS (implied by ``root_certificates``
            or a client certificate); no roots means the system's.
        root_certificates, client_cert, client_key: PEM bytes, instead of a ClientTls.
        server_name: the name the server's certificate must carry, when it is
            not the target's host (``grpc.ssl_target_name_override``).
        load_balancing: ``round_robin`` (calls spread over every resolved
            address) or ``pick_first``.
        default_timeout: timeout for calls made without one (None: no deadline,
            e.g. for long server streams); always clamped to the current
            server RPC's remaining deadline.
        options: channel arguments replacing the defaults of the same name.
        interceptors: extra client interceptors, run after the built-in one.
    """
    merged = dict(channel_options(load_balancing=load_balancing))
    if server_name:
        merged["grpc.ssl_target_name_override"] = server_name
    merged.update(dict(options or ()))
    chain = [OutgoingCallInterceptor(token, default_timeout), *interceptors]
    if isinstance(tls, ClientTls):
        settings = tls
    else:
        settings = ClientTls(root_certificates, client_cert, client_key)
    if tls or root_certificates is not None or client_cert is not None:
        return grpc.aio.secure_channel(
            target, settings.credentials(), options=list(merged.items()), interceptors=chain
        )
    return grpc.aio.insecure_channel(target, options=list(merged.items()), interceptors=chain)
