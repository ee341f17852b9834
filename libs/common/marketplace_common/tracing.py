"""OpenTelemetry tracing: set up from the standard ``OTEL_*`` variables, off by default.

Tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``,
or both, comma-separated) and ``OTEL_SDK_DISABLED`` is not ``true``. Unlike the SDK,
whose default exporter is ``otlp``, an unset variable means *off*: a service started
without any ``OTEL_*`` setting sends nothing anywhere. Off, no tracing code runs on
the request path at all (the server installs no tracing interceptor; the client and
the log processor test one module global); see docs/observability.md for how that was
measured.

The rest is the SDK's own reading of the variables: ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` (the service's name is the default service name),
``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (default: parent-based, always
on), ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc``, the default, or ``http/protobuf``),
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_*`` (batching) and ``OTEL_PROPAGATORS``.

Spans are made by the server and client interceptors (``interceptors.TracingInterceptor``
and ``client.OutgoingCallInterceptor``), by :func:`continue_trace` (a stored trace
context, e.g. an execution's, continued later by a worker) and by :func:`record_span`
(a finished piece of work described after the fact, e.g. one LLM attempt).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from structlog.typing import EventDict, WrappedLogger

TRACER_NAME = "marketplace"
TRACEPARENT = "traceparent"
_W3C = TraceContextTextMapPropagator()

_tracer: Tracer | None = None
_provider: TracerProvider | None = None


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable names something this service cannot do."""


def enabled() -> bool:
    """True when spans are recorded (a provider is installed)."""
    return _tracer is not None


def tracer() -> Tracer | None:
    """The project's tracer, None while tracing is off."""
    return _tracer


def install(provider: TracerProvider | None) -> None:
    """Use ``provider`` for the project's spans (None: tracing off).

    Tests install a provider with an in-memory exporter; :func:`configure_from_env`
    installs the one the ``OTEL_*`` variables describe. Servers built afterwards get
    the tracing interceptor; servers built while tracing was off never trace.
    """
    global _tracer, _provider
    _provider = provider
    _tracer = None if provider is None else provider.get_tracer(TRACER_NAME)


def _exporter(name: str, env: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (otlp, console or none)"
        )
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )

        return HttpSpanExporter()
    raise TracingConfigError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL: unsupported protocol {protocol!r} (grpc or http/protobuf)"
    )


def exporter_names(env: Mapping[str, str]) -> list[str]:
    """The exporters ``env`` asks for; empty when tracing is off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "none").split(",")]
    return [n for n in names if n and n != "none"]


def configure_from_env(
    default_service_name: str, env: Mapping[str, str] | None = None
) -> TracerProvider | None:
    """Install the provider the ``OTEL_*`` variables describe (module docstring).

    Returns it (call :func:`shutdown` at exit to flush), or None when tracing is off.

    Raises:
        TracingConfigError: an exporter or OTLP protocol this service does not know.
    """
    environ = os.environ if env is None else env
    names = exporter_names(environ)
    if not names:
        install(None)
        return None
    exporters = [_exporter(name, environ) for name in names]
    attributes: dict[str, Any] = {}
    if not environ.get("OTEL_SERVICE_NAME") and "service.name=" not in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        attributes[SERVICE_NAME] = default_service_name
    # The sampler comes from OTEL_TRACES_SAMPLER(_ARG) when none is given.
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    install(provider)
    return provider


def shutdown() -> None:
    """Flush and stop the installed provider (the last spans are exported)."""
    provider = _provider
    install(None)
    if provider is not None:
        provider.shutdown()


# --- trace context ----------------------------------------------------------------


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the active span, None without one (or tracing off)."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get(TRACEPARENT)


def context_from_traceparent(traceparent: str | None) -> Context | None:
    """The context a stored ``traceparent`` names (None: none or malformed)."""
    if not traceparent:
        return None
    context = _W3C.extract({TRACEPARENT: traceparent})
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


def inject(carrier: dict[str, str], span: Span) -> None:
    """Write the propagation headers of ``span`` (``OTEL_PROPAGATORS``) into ``carrier``."""
    propagate.inject(carrier, context=trace.set_span_in_context(span))


def extract(carrier: Mapping[str, str]) -> Context:
    """The context the propagation headers in ``carrier`` carry."""
    return propagate.extract(carrier)


@contextlib.contextmanager
def continue_trace(
    traceparent: str | None, name: str, attributes: Mapping[str, Any] | None = None
) -> Iterator[Span | None]:
    """A span, child of the stored ``traceparent`` (a new trace without one), made current.

    Yields None (and does nothing) while tracing is off. Exceptions are recorded and
    set the span's status to ERROR; ``asyncio.CancelledError`` is recorded as such.
    """
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(
        name,
        context=context_from_traceparent(traceparent),
        kind=SpanKind.INTERNAL,
        attributes=dict(attributes or {}),
    ) as span:
        yield span


def record_span(
    name: str,
    start: datetime,
    end: datetime,
    attributes: Mapping[str, Any],
    *,
    error: str | None = None,
) -> None:
    """Record a finished piece of work as a child of the current span.

    ``start``/``end`` are when it ran; ``error`` (a description) marks it failed.
    Nothing happens while tracing is off.
    """
    if _tracer is None:
        return
    span = _tracer.start_span(name, start_time=_ns(start), attributes=dict(attributes))
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end(end_time=_ns(max(start, end)))


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


# --- logs --------------------------------------------------------------------------


def add_trace_ids(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: ``trace_id`` and ``span_id`` of the active span, if any."""
    if _tracer is None:
        return event_dict
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict
