"""Tracing in the server kit: configuration from OTEL_* variables, server and client
spans over real channels, status codes on spans, and nothing installed while off."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from marketplace_common import tracing
from marketplace_common.auth import TokenAuthenticator
from marketplace_common.client import create_channel
from marketplace_common.interceptors import default_interceptors
from marketplace_common.metrics import GrpcServerMetrics
from marketplace_common.server import GrpcServer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from server_kit_fakes import BID_SERVICE, make_server


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.install(None)
    provider.shutdown()


def chain() -> list[str]:
    interceptors = default_interceptors(
        domain="d", authenticator=TokenAuthenticator([]), metrics=GrpcServerMetrics(process=False)
    )
    return [type(i).__name__ for i in interceptors]


def test_off_by_default_and_for_none_or_disabled() -> None:
    assert tracing.configure_from_env("svc", {}) is None
    assert tracing.configure_from_env("svc", {"OTEL_TRACES_EXPORTER": "none"}) is None
    disabled = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}
    assert tracing.configure_from_env("svc", disabled) is None
    assert not tracing.enabled()
    assert "TracingInterceptor" not in chain()


def test_console_exporter_and_default_service_name() -> None:
    provider = tracing.configure_from_env("bids", {"OTEL_TRACES_EXPORTER": "console"})
    try:
        assert provider is not None
        assert tracing.enabled()
        assert provider.resource.attributes["service.name"] == "bids"
        assert chain()[:2] == ["CallContextInterceptor", "TracingInterceptor"]
    finally:
        tracing.shutdown()
    assert not tracing.enabled()


def test_unknown_exporter_or_protocol_is_a_configuration_error() -> None:
    with pytest.raises(tracing.TracingConfigError, match="zipkin"):
        tracing.configure_from_env("svc", {"OTEL_TRACES_EXPORTER": "zipkin"})
    bad_protocol = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}
    with pytest.raises(tracing.TracingConfigError, match="carrier-pigeon"):
        tracing.configure_from_env("svc", bad_protocol)
    assert not tracing.enabled()


def test_otlp_protocols_build_their_exporters() -> None:
    for protocol in ("grpc", "http/protobuf"):
        env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
        try:
            assert tracing.configure_from_env("svc", env) is not None
        finally:
            tracing.shutdown()


def test_malformed_stored_traceparent_starts_a_new_trace(spans: InMemorySpanExporter) -> None:
    assert tracing.context_from_traceparent("not-a-traceparent") is None
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with tracing.continue_trace(parent, "continued", {}) as span:
        assert span is not None
    with tracing.continue_trace("garbage", "fresh", {}):
        pass
    continued, fresh = spans.get_finished_spans()
    assert continued.context is not None
    assert format(continued.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert continued.parent is not None
    assert format(continued.parent.span_id, "016x") == "b7ad6b7169203331"
    assert fresh.parent is None


async def call_get_bid(srv: GrpcServer, bid_id: str) -> grpc.StatusCode:
    async with create_channel(f"127.0.0.1:{srv.port}") as channel:
        try:
            await bids_pb2_grpc.BidServiceStub(channel).GetBid(
                bids_pb2.GetBidRequest(bid_id=bid_id), timeout=5
            )
        except grpc.aio.AioRpcError as err:
            return err.code()
    return grpc.StatusCode.OK


def by_kind(spans: InMemorySpanExporter, kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.kind is kind]


async def test_server_and_client_spans_share_a_trace_with_their_codes(
    spans: InMemorySpanExporter,
) -> None:
    srv = make_server()
    await srv.start()
    try:
        assert await call_get_bid(srv, "b1") == grpc.StatusCode.OK
        assert await call_get_bid(srv, "missing") == grpc.StatusCode.NOT_FOUND
        assert await call_get_bid(srv, "boom") == grpc.StatusCode.INTERNAL
        async with create_channel(f"127.0.0.1:{srv.port}") as channel:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    finally:
        await srv.stop(0)
    servers = by_kind(spans, SpanKind.SERVER)
    clients = by_kind(spans, SpanKind.CLIENT)
    # Health (probes) makes no server span; the client's span of the probe is there.
    assert [s.name for s in servers] == [f"{BID_SERVICE}/GetBid"] * 3
    assert len(clients) == 4
    for server, client in zip(servers, clients[:3], strict=True):
        assert server.parent is not None
        assert client.context is not None
        assert server.parent.span_id == client.context.span_id
        assert server.context is not None
        assert server.context.trace_id == client.context.trace_id
    codes = [s.attributes["rpc.grpc.status_code"] for s in servers if s.attributes]
    assert codes == [0, 5, 13]
    # A caller's mistake (NOT_FOUND) is no server error; INTERNAL is. Clients: any non-OK.
    assert [s.status.status_code for s in servers] == [
        StatusCode.UNSET,
        StatusCode.UNSET,
        StatusCode.ERROR,
    ]
    assert [s.status.status_code for s in clients[:3]] == [
        StatusCode.UNSET,
        StatusCode.ERROR,
        StatusCode.ERROR,
    ]
