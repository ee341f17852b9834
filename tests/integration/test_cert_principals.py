"""Mutual TLS with client certificates as principals (BIDS_AUTH_CERT_PRINCIPALS and the
like), on the server kit over real TLS channels; certificates made by trustme."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from marketplace_common.auth import AuthConfigError, hash_token
from marketplace_common.client import ClientTls, TlsConfigError, create_channel
from marketplace_common.server import GrpcServer
from server_kit_fakes import make_server
from tls_support import CLIENT_NAME, CertFiles, Pki, make_pki

CLIENT_TOKEN = "client-token-0123456789"
TOKENS = [f"{hash_token(CLIENT_TOKEN)}=client:alice@example.com"]
CERT_PRINCIPALS = [f"{CLIENT_NAME}=service:execution"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def mtls_settings(pki: Pki, **overrides: Any) -> dict[str, Any]:
    return {
        "tls_cert_file": pki.server.cert,
        "tls_key_file": pki.server.key,
        "tls_client_ca_file": pki.ca,
        **overrides,
    }


@pytest.fixture
async def server(pki: Pki) -> AsyncIterator[GrpcServer]:
    srv = make_server(
        auth_tokens=TOKENS, **mtls_settings(pki, auth_cert_principals=CERT_PRINCIPALS)
    )
    await srv.start()
    yield srv
    await srv.stop(0)


def tls_for(pki: Pki, cert: CertFiles) -> ClientTls:
    return ClientTls.from_files(pki.ca, cert.cert, cert.key)


async def get_bid(
    srv: GrpcServer, pki: Pki, cert: CertFiles, bid_id: str, token: str | None = None
) -> str:
    async with create_channel(
        f"localhost:{srv.port}", tls=tls_for(pki, cert), token=token
    ) as channel:
        reply = await bids_pb2_grpc.BidServiceStub(channel).GetBid(
            bids_pb2.GetBidRequest(bid_id=bid_id), timeout=5
        )
    return str(reply.bid.proposal)


async def rpc_error(*args: Any, **kw: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await get_bid(*args, **kw)
    return info.value


async def test_a_mapped_certificate_is_its_principal_without_a_token(
    server: GrpcServer, pki: Pki
) -> None:
    # "service-only" requires the service role; the proposal is the caller's subject.
    assert await get_bid(server, pki, pki.client, "service-only") == "execution"


async def test_a_bearer_token_still_works_and_decides_over_the_certificate(
    server: GrpcServer, pki: Pki
) -> None:
    assert await get_bid(server, pki, pki.client, "b1", CLIENT_TOKEN) == "alice@example.com"
    err = await rpc_error(server, pki, pki.client, "service-only", CLIENT_TOKEN)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_wrong_token_is_refused_even_with_a_mapped_certificate(
    server: GrpcServer, pki: Pki
) -> None:
    err = await rpc_error(server, pki, pki.client, "b1", "not-a-configured-token")
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_unmapped_certificate_without_a_token_is_unauthenticated(
    server: GrpcServer, pki: Pki
) -> None:
    err = await rpc_error(server, pki, pki.stranger, "b1")
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "client certificate" in (err.details() or "")
    # ... and with a token, the stranger's certificate only carries the connection.
    assert await get_bid(server, pki, pki.stranger, "b1", CLIENT_TOKEN) == "alice@example.com"


async def test_health_stays_open_to_any_verified_client(server: GrpcServer, pki: Pki) -> None:
    async with create_channel(
        f"localhost:{server.port}", tls=tls_for(pki, pki.stranger)
    ) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_client_without_a_certificate_cannot_connect(server: GrpcServer, pki: Pki) -> None:
    async with create_channel(
        f"localhost:{server.port}", tls=ClientTls(pki.ca_pem), token=CLIENT_TOKEN
    ) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await bids_pb2_grpc.BidServiceStub(channel).GetBid(
                bids_pb2.GetBidRequest(bid_id="b1"), timeout=5
            )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_certificate_principals_alone_satisfy_protected_mode(pki: Pki) -> None:
    srv = make_server(
        grpc_host="0.0.0.0",
        **mtls_settings(pki, auth_cert_principals=CERT_PRINCIPALS),
    )
    await srv.start()
    try:
        assert await get_bid(srv, pki, pki.client, "service-only") == "execution"
        err = await rpc_error(srv, pki, pki.stranger, "b1")
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await srv.stop(0)


def test_without_certificate_principals_a_public_bind_is_still_refused(pki: Pki) -> None:
    with pytest.raises(AuthConfigError, match="protected mode"):
        make_server(grpc_host="0.0.0.0", **mtls_settings(pki))


async def test_an_unreadable_tls_file_is_refused_naming_the_setting(
    pki: Pki, tmp_path: Path
) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    srv = make_server(tls_cert_file=not_pem, tls_key_file=pki.server.key)
    with pytest.raises(TlsConfigError, match="MARKETPLACE_TLS_CERT_FILE"):
        await srv.start()
    with pytest.raises(TlsConfigError, match="X_TLS_CA_FILE: cannot read"):
        ClientTls.from_files(tmp_path / "missing.pem", setting_prefix="X_")
