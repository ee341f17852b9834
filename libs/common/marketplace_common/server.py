"""grpc.aio server bootstrap: services, health, reflection, interceptors, metrics, shutdown.

A service's composition root builds its servicers and hands them over::

    server = create_grpc_server(
        settings,
        [GrpcService(servicer, bids_pb2_grpc.add_BidServiceServicer_to_server, BID_SERVICE)],
        domain="bids.marketplace",
    )
    port = await server.start()
    await server.serve_until_signal()   # SIGTERM/SIGINT: graceful stop, then return

What it sets up: the interceptor chain of ``interceptors.py`` (request id,
metrics, canonical log line, error mapping, auth), ``grpc.health.v1.Health``
(overall "" and every service SERVING; NOT_SERVING when stopping), server
reflection for the services, health and reflection themselves, with the
``google.rpc`` error detail types resolvable so grpcurl decodes error details;
keepalive and message size limits, optional TLS / mTLS, a Prometheus listener
on a port of its own, and protected mode (no non-loopback bind without tokens).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

# Imported for its side effect: the google.rpc detail types join the default
# descriptor pool, so reflection can serve them and grpcurl decodes details.
from google.rpc import error_details_pb2  # type: ignore[import-untyped]  # noqa: F401
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from marketplace_common.auth import TokenAuthenticator, check_bind_allowed
from marketplace_common.auth_cert import CertificatePrincipals
from marketplace_common.client import read_pem
from marketplace_common.interceptors import default_interceptors
from marketplace_common.logging import get_logger
from marketplace_common.metrics import GrpcServerMetrics, MetricsHttpServer, start_metrics_server
from marketplace_common.ports import check_port_free
from marketplace_common.rpc_wrapping import chain_interceptors
from marketplace_common.settings import ServiceSettings

HEALTH_SERVICE_NAME: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
REFLECTION_SERVICE_NAME: str = reflection.SERVICE_NAME
ShutdownHook = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class GrpcService:
    """One service to serve: the servicer, its generated ``add_*_to_server``, its full name."""

    servicer: object
    add_fn: Callable[[Any, grpc.aio.Server], None]
    name: str


class HealthServicer(health_aio.HealthServicer):  # type: ignore[misc]
    """The reference aio health servicer, but Watch streams end once shutting down.

    Without this a client's open Watch stream holds the server's graceful stop
    for the whole grace period. The watcher still receives NOT_SERVING first.
    """

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        service = request.service
        condition = self._server_watchers[service]
        self._watcher_count_by_service[service] += 1
        last_status = None
        try:
            async with condition:
                while True:
                    status = self._server_status.get(
                        service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
                    )
                    if status != last_status:
                        await context.write(health_pb2.HealthCheckResponse(status=status))
                    last_status = status
                    if self._gracefully_shutting_down:
                        return
                    await condition.wait()
        finally:
            self._watcher_count_by_service[service] -= 1
            if self._watcher_count_by_service[service] == 0:
                del self._server_watchers[service]
                del self._watcher_count_by_service[service]


def _env_prefix(settings: ServiceSettings) -> str:
    return str(settings.model_config.get("env_prefix", "")).upper()


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def server_options(settings: ServiceSettings) -> list[tuple[str, Any]]:
    """Channel arguments of the server: message sizes, keepalive, port sharing only
    among the processes of one ``serve --workers N``, and the optional maximum
    connection age."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", round(settings.keepalive_time_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", round(settings.keepalive_timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        (
            "grpc.http2.min_recv_ping_interval_without_data_ms",
            round(settings.keepalive_min_client_ping_seconds * 1000),
        ),
        ("grpc.http2.max_ping_strikes", 2),
        # Never share a port silently with another program (SO_REUSEPORT), except
        # with the sibling processes of ``serve --workers N``: their supervisor
        # checked that the port was free and holds it (marketplace_common.supervisor).
        ("grpc.so_reuseport", 1 if settings.processes > 1 else 0),
    ]
    if settings.max_connection_age_seconds is not None:
        options += [
            ("grpc.max_connection_age_ms", round(settings.max_connection_age_seconds * 1000)),
            (
                "grpc.max_connection_age_grace_ms",
                round(settings.max_connection_age_grace_seconds * 1000),
            ),
        ]
    return options


def server_credentials(settings: ServiceSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' files (mTLS with a client CA), or None.

    Raises TlsConfigError (naming the setting) for a missing or non-PEM file.
    """
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    prefix = _env_prefix(settings)
    key = read_pem(settings.tls_key_file, f"{prefix}TLS_KEY_FILE")
    cert = read_pem(settings.tls_cert_file, f"{prefix}TLS_CERT_FILE")
    client_ca = (
        read_pem(settings.tls_client_ca_file, f"{prefix}TLS_CLIENT_CA_FILE")
        if settings.tls_client_ca_file
        else None
    )
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


class GrpcServer:
    """A configured grpc.aio server with health, reflection, metrics and graceful stop."""

    def __init__(
        self,
        settings: ServiceSettings,
        server: grpc.aio.Server,
        health: HealthServicer,
        health_service_names: Sequence[str],
        metrics: GrpcServerMetrics,
    ) -> None:
        self.settings = settings
        self.server = server
        self.health = health
        self.metrics = metrics
        self._health_names = ("", *health_service_names)
        self._metrics_http: MetricsHttpServer | None = None
        self._hooks: list[ShutdownHook] = []
        self._stopping_callbacks: list[Callable[[], None]] = []
        self._port: int | None = None
        self._stopping = False
        self._stop_deadline: float | None = None
        self.stopping = asyncio.Event()
        """Set when a stop begins: long server streams can end early instead of
        holding the grace period (health Watch streams already do)."""
        self.log = get_logger("marketplace.server")

    @property
    def port(self) -> int:
        """The bound gRPC port (after start)."""
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def metrics_port(self) -> int | None:
        """The bound metrics port, None when the listener is off."""
        return None if self._metrics_http is None else self._metrics_http.port

    def add_shutdown_hook(self, hook: ShutdownHook) -> None:
        """Run ``hook`` after the server stopped (hooks run last-added first)."""
        self._hooks.append(hook)

    async def start(self) -> int:
        """Bind, start serving and mark every service SERVING; returns the bound port.

        ``grpc_port`` 0 picks a free port.
        """
        settings = self.settings
        address = _address(settings.grpc_host, settings.grpc_port)
        prefix = str(settings.model_config.get("env_prefix", "")).upper()
        metrics_host = settings.metrics_host or settings.grpc_host
        # Said plainly before gRPC tries (its own failure is a log line of the C core).
        # One of several processes on a port: the supervisor checked it and holds it.
        if settings.processes == 1:
            check_port_free(
                settings.grpc_host, settings.grpc_port, what="gRPC", setting=f"{prefix}GRPC_PORT"
            )
        if settings.metrics_port:
            check_port_free(
                metrics_host,
                settings.metrics_port,
                what="metrics",
                setting=f"{prefix}METRICS_PORT",
            )
        credentials = server_credentials(settings)
        try:
            if credentials is None:
                port = self.server.add_insecure_port(address)
            else:
                port = self.server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {address}: {exc}") from exc
        if port == 0:
            raise OSError(f"cannot listen on {address}")
        await self.server.start()
        self._port = port
        for name in self._health_names:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if settings.metrics_port:
            try:
                self._metrics_http = start_metrics_server(
                    self.metrics.registry, metrics_host, settings.metrics_port
                )
            except OSError as exc:
                await self.server.stop(None)
                address = _address(metrics_host, settings.metrics_port)
                raise OSError(f"cannot listen on {address} (metrics): {exc.strerror}") from exc
        self.log.info(
            "server.started",
            address=_address(settings.grpc_host, port),
            tls=credentials is not None,
            mtls=settings.tls_client_ca_file is not None,
            metrics_port=self.metrics_port,
            services=list(self._health_names[1:]),
        )
        return port

    async def stop(self, grace: float | None = None) -> None:
        """Stop gracefully: health NOT_SERVING first, then in-flight calls get ``grace``.

        ``grace`` defaults to ``settings.shutdown_grace_seconds``; new calls
        are refused as soon as the stop begins. Safe to call twice.
        """
        if self._stopping:
            await self.wait_for_termination()
            return
        self._stopping = True
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        self._stop_deadline = asyncio.get_running_loop().time() + grace
        self.log.info("server.stopping", grace_seconds=grace)
        await self.health.enter_graceful_shutdown()
        self.stopping.set()
        for callback in self._stopping_callbacks:
            try:
                callback()
            except Exception:
                self.log.exception("server.stopping_callback_failed", callback=repr(callback))
        await self.server.stop(grace)
        for hook in reversed(self._hooks):
            try:
                await hook()
            except Exception:
                self.log.exception("server.shutdown_hook_failed", hook=repr(hook))
        if self._metrics_http is not None:
            await asyncio.to_thread(self._metrics_http.close)
            self._metrics_http = None
        self.log.info("server.stopped")

    def remaining_grace(self) -> float:
        """Seconds left of the grace of the stop in progress: shutdown hooks that
        drain work of their own (the execution worker pool) share the one grace
        with the in-flight calls instead of adding theirs. 0 when none is left."""
        if self._stop_deadline is None:
            return self.settings.shutdown_grace_seconds
        return max(0.0, self._stop_deadline - asyncio.get_running_loop().time())

    def on_stopping(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when a stop begins: after health turns NOT_SERVING and
        before in-flight calls are drained, so long server streams can end at once
        instead of holding the grace period."""
        self._stopping_callbacks.append(callback)

    async def wait_for_termination(self) -> None:
        """Wait until the server has stopped."""
        # Shielded: cancelling a waiter must not cancel grpc's shared shutdown
        # future (that would abort a graceful stop in progress).
        await asyncio.shield(self.server.wait_for_termination())

    async def serve_until_signal(
        self, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully and return (exit code 0).

        Starts the server if needed. After the first signal the default
        handlers are back, so a second Ctrl-C interrupts at once; except in one
        of several processes (``settings.processes`` > 1), which ignores further
        signals: a Ctrl-C reaches it and its supervisor, which then forwards a
        SIGTERM, and escalating is the supervisor's call.
        """
        if self._port is None:
            await self.start()
        loop = asyncio.get_running_loop()
        received: asyncio.Future[signal.Signals] = loop.create_future()
        wanted = tuple(signals)

        def on_signal(sig: signal.Signals) -> None:
            if not received.done():
                received.set_result(sig)

        for sig in wanted:
            loop.add_signal_handler(sig, on_signal, sig)
        terminated: asyncio.Future[Any] = asyncio.ensure_future(self.wait_for_termination())
        waiting: set[asyncio.Future[Any]] = {received, terminated}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for sig in wanted:
                loop.remove_signal_handler(sig)
                if self.settings.processes > 1:
                    signal.signal(sig, signal.SIG_IGN)
            terminated.cancel()
        if received.done():
            self.log.info("server.signal", signal=received.result().name)
        else:
            received.cancel()
        await self.stop()

    serve_forever = serve_until_signal


def create_grpc_server(
    settings: ServiceSettings,
    services: Sequence[GrpcService],
    *,
    domain: str,
    authenticator: TokenAuthenticator | None = None,
    health_service_names: Sequence[str] | None = None,
    metrics: GrpcServerMetrics | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),  # type: ignore[type-arg]
) -> GrpcServer:
    """Build (not start) a server for ``services``.

    Args:
        settings: the service's settings (host, port, TLS, limits, ...).
        services: the servicers to register.
        domain: the ErrorInfo domain (``bids.marketplace``).
        authenticator: defaults to one built from ``settings.auth_tokens``.
        health_service_names: names reported by health (default: the services').
        metrics: the metrics (and registry) to use; a fresh registry by default.
        interceptors: extra interceptors, run inside the default chain.

    Raises:
        AuthConfigError: protected mode, a non-loopback bind without tokens.
    """
    auth = authenticator if authenticator is not None else TokenAuthenticator(settings.auth_tokens)
    certificates = CertificatePrincipals(settings.auth_cert_principals)
    prefix = _env_prefix(settings)
    check_bind_allowed(
        settings.grpc_host,
        auth,
        tokens_setting=f"{prefix}AUTH_TOKENS",
        certificate_auth=certificates.enabled,
    )
    server_metrics = metrics if metrics is not None else GrpcServerMetrics()
    chain = [
        *default_interceptors(
            domain=domain, authenticator=auth, metrics=server_metrics, certificates=certificates
        ),
        *interceptors,
    ]
    server = grpc.aio.server(
        interceptors=chain_interceptors(chain),
        options=server_options(settings),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    for service in services:
        service.add_fn(service.servicer, server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [s.name for s in services]
    reflection.enable_server_reflection(
        [*names, HEALTH_SERVICE_NAME, REFLECTION_SERVICE_NAME], server
    )
    if not auth.enabled and not certificates.enabled:
        get_logger("marketplace.server").warning(
            "auth.disabled_local_dev",
            host=settings.grpc_host,
            principal="admin:local-dev",
            hint="configure auth tokens before binding beyond loopback",
        )
    health_names = names if health_service_names is None else list(health_service_names)
    return GrpcServer(settings, server, health, health_names, server_metrics)
