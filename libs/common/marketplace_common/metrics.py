"""Prometheus metrics for a gRPC server, named and labelled like go-grpc-prometheus.

* ``grpc_server_started_total{grpc_type,grpc_service,grpc_method}``
* ``grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}``
* ``grpc_server_msg_received_total{grpc_type,grpc_service,grpc_method}``
* ``grpc_server_msg_sent_total{grpc_type,grpc_service,grpc_method}``
* ``grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}`` (histogram)

``grpc_type`` is ``unary``, ``client_stream``, ``server_stream`` or
``bidi_stream``; ``grpc_code`` is spelled as Go's ``codes.Code.String()``
(``OK``, ``Canceled``, ``InvalidArgument``, ``NotFound``, ...), so stock
dashboards and alerts built on go-grpc-prometheus work unchanged. No
``*_created`` series are exported (``disable_created_metrics``). Each server
gets a registry of its own, so several servers in one process (tests) never
clash; services add their own metrics to ``GrpcServerMetrics.registry``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

_LABELS = ("grpc_type", "grpc_service", "grpc_method")
# prometheus' default buckets, as go-grpc-prometheus uses.
HANDLING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Go's spelling of the status codes (google.golang.org/grpc/codes, Code.String()).
_GO_SPELLING = {"OK": "OK", "CANCELLED": "Canceled"}
GO_CODE_NAMES: dict[grpc.StatusCode, str] = {
    code: _GO_SPELLING.get(code.name) or "".join(part.capitalize() for part in code.name.split("_"))
    for code in grpc.StatusCode
}


@dataclass(slots=True)
class MethodMetrics:
    """The labelled children of one method's series, looked up once per method."""

    started: Counter
    received: Counter
    sent: Counter
    seconds: Histogram
    handled_parent: Counter
    labels: tuple[str, str, str]
    handled: dict[grpc.StatusCode, Counter] = field(default_factory=dict)

    def handled_with(self, code: grpc.StatusCode) -> Counter:
        """The ``grpc_server_handled_total`` child of ``code``."""
        child = self.handled.get(code)
        if child is None:
            child = self.handled_parent.labels(*self.labels, GO_CODE_NAMES[code])
            self.handled[code] = child
        return child


class GrpcServerMetrics:
    """The server-side RPC metrics, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        """Create the metrics in ``registry`` (a fresh one by default).

        ``process`` also registers the process, platform and GC collectors, so
        the listener shows memory, CPU and file descriptors.
        """
        disable_created_metrics()  # type: ignore[no-untyped-call]  # process-wide; idempotent
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._methods: dict[tuple[str, str, str], MethodMetrics] = {}
        if process:
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)
        self.started = Counter(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            _LABELS,
            registry=self.registry,
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*_LABELS, "grpc_code"),
            registry=self.registry,
        )
        self.msg_received = Counter(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            _LABELS,
            registry=self.registry,
        )
        self.msg_sent = Counter(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            _LABELS,
            registry=self.registry,
        )
        self.handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.",
            _LABELS,
            buckets=HANDLING_BUCKETS,
            registry=self.registry,
        )

    def method(self, grpc_type: str, service: str, method: str) -> MethodMetrics:
        """The series of one method (cached: label lookups cost more than the increments)."""
        labels = (grpc_type, service, method)
        found = self._methods.get(labels)
        if found is None:
            found = MethodMetrics(
                started=self.started.labels(*labels),
                received=self.msg_received.labels(*labels),
                sent=self.msg_sent.labels(*labels),
                seconds=self.handling_seconds.labels(*labels),
                handled_parent=self.handled,
                labels=labels,
            )
            self._methods[labels] = found
        return found

    def value(self, name: str, **labels: str) -> float:
        """The current value of a sample (0.0 when absent); handy in tests."""
        sample = self.registry.get_sample_value(name, labels)
        return 0.0 if sample is None else sample


@dataclass(slots=True)
class MetricsHttpServer:
    """A running ``/metrics`` listener (prometheus_client's threaded HTTP server)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        return int(self.server.server_port)

    def close(self) -> None:
        """Stop serving and release the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(registry: CollectorRegistry, host: str, port: int) -> MetricsHttpServer:
    """Serve ``registry`` over HTTP on ``host:port`` (port 0 picks a free one)."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsHttpServer(server, thread)
