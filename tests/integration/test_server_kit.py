"""The server kit over real channels: health, reflection, auth, errors, metrics, logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import shutil
import socket
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import grpc
import grpc.aio
import pytest
import structlog
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]  # no py.typed
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from marketplace.execution.v1 import execution_pb2, execution_pb2_grpc
from marketplace_common.auth import AuthConfigError, hash_token
from marketplace_common.client import create_channel
from marketplace_common.logging import configure_logging
from marketplace_common.server import GrpcServer
from rpc_trailers import trailers
from server_kit_fakes import BID_SERVICE, DOMAIN, EXECUTION_SERVICE, make_server

CLIENT_TOKEN = "client-token-0123456789"
SERVICE_TOKEN = "service-token-0123456789"
TOKENS = [
    f"{hash_token(CLIENT_TOKEN)}=client:alice@example.com",
    f"{hash_token(SERVICE_TOKEN)}=service:execution",
]
GRPCURL = shutil.which("grpcurl") or ".venv/bin/grpcurl"


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    srv = make_server()
    await srv.start()
    yield srv
    await srv.stop(0)


@pytest.fixture
async def secured() -> AsyncIterator[GrpcServer]:
    srv = make_server(auth_tokens=TOKENS)
    await srv.start()
    yield srv
    await srv.stop(0)


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging("INFO", json=True, stream=out)
    yield out
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_marketplace_handler", False)]:
        root.removeHandler(handler)


def target(srv: GrpcServer) -> str:
    return f"127.0.0.1:{srv.port}"


async def get_bid(srv: GrpcServer, bid_id: str, token: str | None = None, **kw: Any) -> Any:
    async with create_channel(target(srv), token=token) as channel:
        return await bids_pb2_grpc.BidServiceStub(channel).GetBid(
            bids_pb2.GetBidRequest(bid_id=bid_id), timeout=5, **kw
        )


async def rpc_error(srv: GrpcServer, bid_id: str, token: str | None = None) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await get_bid(srv, bid_id, token)
    return info.value


def status_of(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status as grpc_status, the reference decoder, reads it from a failed call.

    ``from_call`` only reads ``code()``, ``details()`` and ``trailing_metadata()``,
    which AioRpcError has; grpc-stubs types its parameter as ``grpc.Call``, which
    AioRpcError does not subclass.
    """
    return rpc_status.from_call(cast("grpc.Call", err))


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = status_of(err)
    assert status is not None
    infos = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
    assert len(infos) == 1
    return infos[0]


async def health_status(srv: GrpcServer, service: str) -> int:
    async with create_channel(target(srv)) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return int(reply.status)


async def run(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# --- health and reflection --------------------------------------------------------


async def test_health_overall_is_serving(server: GrpcServer) -> None:
    assert await health_status(server, "") == health_pb2.HealthCheckResponse.SERVING


async def test_health_per_service_is_serving(server: GrpcServer) -> None:
    for name in (BID_SERVICE, EXECUTION_SERVICE):
        assert await health_status(server, name) == health_pb2.HealthCheckResponse.SERVING


async def test_health_is_open_without_a_token(secured: GrpcServer) -> None:
    assert await health_status(secured, BID_SERVICE) == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_services_health_and_reflection(server: GrpcServer) -> None:
    def list_services() -> list[str]:
        with grpc.insecure_channel(target(server)) as channel:
            return list(ProtoReflectionDescriptorDatabase(channel).get_services())

    services = await asyncio.to_thread(list_services)
    assert set(services) >= {
        BID_SERVICE,
        EXECUTION_SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


async def test_grpcurl_lists_services_without_proto_files(secured: GrpcServer) -> None:
    code, out, err = await run(GRPCURL, "-plaintext", target(secured), "list")
    assert code == 0, err
    assert BID_SERVICE in out.split()
    assert "grpc.health.v1.Health" in out.split()


async def test_grpcurl_decodes_error_details(server: GrpcServer) -> None:
    code, out, err = await run(
        GRPCURL,
        "-plaintext",
        "-d",
        '{"bid_id": "missing"}',
        target(server),
        f"{BID_SERVICE}/GetBid",
    )
    assert code != 0
    assert "type.googleapis.com/google.rpc.ErrorInfo" in out + err
    assert '"reason":"BID_NOT_FOUND"' in (out + err).replace(" ", "")


# --- authentication ------------------------------------------------------------------


async def test_valid_token_is_accepted_and_names_the_caller(secured: GrpcServer) -> None:
    reply = await get_bid(secured, "b1", CLIENT_TOKEN)
    assert reply.bid.proposal == "alice@example.com"


async def test_missing_token_is_unauthenticated(secured: GrpcServer) -> None:
    err = await rpc_error(secured, "b1")
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(err).reason == "UNAUTHENTICATED"


async def test_unknown_token_is_unauthenticated(secured: GrpcServer) -> None:
    err = await rpc_error(secured, "b1", "not-a-configured-token")
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_wrong_role_is_permission_denied(secured: GrpcServer) -> None:
    err = await rpc_error(secured, "service-only", CLIENT_TOKEN)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(err).reason == "PERMISSION_DENIED"


async def test_right_role_passes_role_check(secured: GrpcServer) -> None:
    reply = await get_bid(secured, "service-only", SERVICE_TOKEN)
    assert reply.bid.proposal == "execution"


async def test_loopback_without_tokens_serves_everyone_as_local_dev(server: GrpcServer) -> None:
    reply = await get_bid(server, "service-only")
    assert reply.bid.proposal == "local-dev"


def test_protected_mode_refuses_wildcard_bind_without_tokens() -> None:
    with pytest.raises(AuthConfigError, match="protected mode"):
        make_server(grpc_host="0.0.0.0")


async def test_wildcard_bind_with_tokens_starts() -> None:
    srv = make_server(grpc_host="0.0.0.0", auth_tokens=TOKENS)
    await srv.start()
    try:
        reply = await get_bid(srv, "b1", CLIENT_TOKEN)
        assert reply.bid.bid_id == "b1"
    finally:
        await srv.stop(0)


# --- error mapping ---------------------------------------------------------------


async def test_agent_error_maps_to_status_with_error_info(server: GrpcServer) -> None:
    err = await rpc_error(server, "missing")
    assert err.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(err)
    assert (info.reason, info.domain, info.metadata["errorType"]) == (
        "BID_NOT_FOUND",
        DOMAIN,
        "PERMANENT",
    )


async def test_transient_agent_error_carries_retry_info(server: GrpcServer) -> None:
    err = await rpc_error(server, "flaky")
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    status = status_of(err)
    assert status is not None
    assert any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)


async def test_unexpected_exception_is_internal_with_safe_message(
    server: GrpcServer, log_lines: io.StringIO
) -> None:
    err = await rpc_error(server, "boom")
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "SELECT" not in (err.details() or "")
    assert error_info(err).metadata["errorType"] == "FATAL"
    logged = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    [failure] = [line for line in logged if line["event"] == "rpc.unexpected_error"]
    assert failure["level"] == "error"
    assert "RuntimeError: secret internals" in failure["exception"]


async def test_server_stream_delivers_every_message(server: GrpcServer) -> None:
    async with create_channel(target(server)) as channel:
        stub = execution_pb2_grpc.ExecutionServiceStub(channel)
        call = stub.WatchExecution(execution_pb2.WatchExecutionRequest(execution_id="e"))
        ids = [reply.event.execution.execution_id async for reply in call]
    assert ids == ["e-0", "e-1"]


async def test_server_stream_error_mid_stream_is_mapped(server: GrpcServer) -> None:
    async with create_channel(target(server)) as channel:
        stub = execution_pb2_grpc.ExecutionServiceStub(channel)
        call = stub.WatchExecution(execution_pb2.WatchExecutionRequest(execution_id="fail"))
        first = await call.read()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
    assert isinstance(first, execution_pb2.WatchExecutionResponse)
    assert first.event.execution.execution_id == "fail-0"
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(info.value).reason == "EXECUTION_NOT_FOUND"


# --- metrics -----------------------------------------------------------------------


async def settled(srv: GrpcServer) -> None:
    """Wait until every started RPC is also counted as handled.

    The server records an RPC as handled when its handler has finished, which
    can be a moment after the client already has the answer (an error's status
    is on the wire before the interceptor's bookkeeping runs).
    """
    async with asyncio.timeout(5.0):
        while True:
            if _total(srv, "grpc_server_started_total") == _total(srv, "grpc_server_handled_total"):
                return
            await asyncio.sleep(0.01)


def _total(srv: GrpcServer, sample_name: str) -> float:
    return sum(
        sample.value
        for metric in srv.metrics.registry.collect()
        for sample in metric.samples
        if sample.name == sample_name
    )


def handled(srv: GrpcServer, method: str, code: str, kind: str = "unary") -> float:
    services = {"WatchExecution": EXECUTION_SERVICE, "Watch": "grpc.health.v1.Health"}
    service = services.get(method, BID_SERVICE)
    return srv.metrics.value(
        "grpc_server_handled_total",
        grpc_type=kind,
        grpc_service=service,
        grpc_method=method,
        grpc_code=code,
    )


async def test_metrics_count_started_and_handled_by_code(server: GrpcServer) -> None:
    await get_bid(server, "b1")
    await get_bid(server, "b2")
    await rpc_error(server, "missing")
    await settled(server)
    labels = {"grpc_type": "unary", "grpc_service": BID_SERVICE, "grpc_method": "GetBid"}
    assert server.metrics.value("grpc_server_started_total", **labels) == 3
    assert handled(server, "GetBid", "OK") == 2
    assert handled(server, "GetBid", "NotFound") == 1
    assert handled(server, "GetBid", "NOT_FOUND") == 0  # spelled as go-grpc-prometheus does
    assert server.metrics.value("grpc_server_handling_seconds_count", **labels) == 3
    assert server.metrics.value("grpc_server_msg_received_total", **labels) == 3
    # A unary response is a message sent only when the call ended OK.
    assert server.metrics.value("grpc_server_msg_sent_total", **labels) == 2


async def test_metrics_label_auth_failures(secured: GrpcServer) -> None:
    await rpc_error(secured, "b1")
    await settled(secured)
    assert handled(secured, "GetBid", "Unauthenticated") == 1


async def test_metrics_label_server_streams(server: GrpcServer) -> None:
    async with create_channel(target(server)) as channel:
        stub = execution_pb2_grpc.ExecutionServiceStub(channel)
        call = stub.WatchExecution(execution_pb2.WatchExecutionRequest(execution_id="e"))
        _ = [reply async for reply in call]
    await settled(server)
    assert handled(server, "WatchExecution", "OK", kind="server_stream") == 1
    labels = {
        "grpc_type": "server_stream",
        "grpc_service": EXECUTION_SERVICE,
        "grpc_method": "WatchExecution",
    }
    assert server.metrics.value("grpc_server_msg_received_total", **labels) == 1
    assert server.metrics.value("grpc_server_msg_sent_total", **labels) == 2


async def test_metrics_count_messages_written_with_context_write(server: GrpcServer) -> None:
    # Health's Watch writes with context.write (a coroutine handler, not a generator).
    async with create_channel(target(server)) as channel:
        call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        first = await call.read()
        call.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    await settled(server)
    labels = {
        "grpc_type": "server_stream",
        "grpc_service": "grpc.health.v1.Health",
        "grpc_method": "Watch",
    }
    assert server.metrics.value("grpc_server_msg_sent_total", **labels) == 1
    assert handled(server, "Watch", "Canceled", kind="server_stream") == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_metrics_are_served_over_http_on_their_own_port() -> None:
    srv = make_server(metrics_port=free_port())
    await srv.start()
    try:
        await get_bid(srv, "b1")
        url = f"http://127.0.0.1:{srv.metrics_port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    finally:
        await srv.stop(0)
    assert (
        'grpc_server_handled_total{grpc_code="OK",grpc_method="GetBid",'
        f'grpc_service="{BID_SERVICE}",grpc_type="unary"}} 1.0'
    ) in body.decode()
    assert "_created" not in body.decode()  # no duplicate *_created series


async def test_two_servers_in_one_process_keep_separate_metrics() -> None:
    first, second = make_server(), make_server()
    await first.start()
    await second.start()
    try:
        await get_bid(first, "b1")
        assert handled(first, "GetBid", "OK") == 1
        assert handled(second, "GetBid", "OK") == 0
    finally:
        await first.stop(0)
        await second.stop(0)


# --- request id and the canonical log line ---------------------------------------------


async def test_request_id_is_echoed_in_trailing_metadata(server: GrpcServer) -> None:
    async with create_channel(target(server)) as channel:
        call = bids_pb2_grpc.BidServiceStub(channel).GetBid(
            bids_pb2.GetBidRequest(bid_id="b1"), metadata=(("x-request-id", "req-42"),)
        )
        await call
        metadata = await call.trailing_metadata()
    assert metadata is not None
    assert dict(metadata)["x-request-id"] == "req-42"


async def test_request_id_is_generated_when_absent(server: GrpcServer) -> None:
    async with create_channel(target(server)) as channel:
        call = bids_pb2_grpc.BidServiceStub(channel).GetBid(bids_pb2.GetBidRequest(bid_id="b1"))
        await call
        metadata = await call.trailing_metadata()
    assert metadata is not None
    assert len(str(dict(metadata)["x-request-id"])) == 32


async def test_request_id_is_echoed_on_errors(server: GrpcServer) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await get_bid(server, "missing", metadata=(("x-request-id", "req-err"),))
    assert trailers(info.value)["x-request-id"] == "req-err"


async def test_malformed_request_id_is_replaced(server: GrpcServer) -> None:
    async with create_channel(target(server)) as channel:
        call = bids_pb2_grpc.BidServiceStub(channel).GetBid(
            bids_pb2.GetBidRequest(bid_id="b1"), metadata=(("x-request-id", "bad id with spaces"),)
        )
        await call
        metadata = await call.trailing_metadata()
    assert metadata is not None
    assert dict(metadata)["x-request-id"] != "bad id with spaces"


async def test_one_canonical_log_line_per_rpc(server: GrpcServer, log_lines: io.StringIO) -> None:
    await get_bid(server, "b1", metadata=(("x-request-id", "req-canon"),))
    logged = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    lines = [line for line in logged if line.get("request_id") == "req-canon"]
    [canonical] = [line for line in lines if line["event"] == "rpc.handled"]
    assert canonical["method"] == f"/{BID_SERVICE}/GetBid"
    assert canonical["code"] == "OK"
    assert canonical["principal"] == "local-dev"
    assert canonical["peer"].startswith("ipv4:127.0.0.1:")
    assert canonical["duration_ms"] >= 0


async def test_canonical_log_line_records_error_code(
    server: GrpcServer, log_lines: io.StringIO
) -> None:
    await rpc_error(server, "missing")
    logged = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    [canonical] = [line for line in logged if line["event"] == "rpc.handled"]
    assert (canonical["code"], canonical["level"]) == ("NOT_FOUND", "info")


async def test_canonical_log_line_never_contains_the_token(
    secured: GrpcServer, log_lines: io.StringIO
) -> None:
    await get_bid(secured, "b1", CLIENT_TOKEN)
    assert CLIENT_TOKEN not in log_lines.getvalue()
    assert "alice@example.com" in log_lines.getvalue()
