"""TLS and mTLS on the server kit, with certificates made by the openssl CLI."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from marketplace_common.client import create_channel
from marketplace_common.server import GrpcServer
from server_kit_fakes import make_server

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command")
SAN = "subjectAltName=DNS:localhost,IP:127.0.0.1"


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def openssl(*args: str | Path, cwd: Path) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *map(str, args)], cwd=cwd, check=True, capture_output=True)


def issue(name: str, cwd: Path, extension: str) -> tuple[Path, Path]:
    ext = cwd / f"{name}.ext"
    ext.write_text(extension + "\n")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=cwd)
    openssl(
        "req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out", f"{name}.csr", cwd=cwd
    )
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-extfile", ext, "-out", f"{name}.pem", cwd=cwd,
    )  # fmt: skip
    return cwd / f"{name}.pem", cwd / f"{name}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    cwd = tmp_path_factory.mktemp("pki")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=cwd)
    openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=test-ca", "-days", "1",
        "-out", "ca.pem", cwd=cwd,
    )  # fmt: skip
    server_cert, server_key = issue("server", cwd, SAN)
    client_cert, client_key = issue("client", cwd, "extendedKeyUsage=clientAuth")
    return Pki(cwd / "ca.pem", server_cert, server_key, client_cert, client_key)


async def check(target: str, **channel: object) -> int:
    async with create_channel(target, **channel) as ch:  # type: ignore[arg-type]
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return int(reply.status)


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[GrpcServer]:
    server = make_server(tls_cert_file=pki.server_cert, tls_key_file=pki.server_key)
    await server.start()
    yield server
    await server.stop(0)


@pytest.fixture
async def mtls_server(pki: Pki) -> AsyncIterator[GrpcServer]:
    server = make_server(
        tls_cert_file=pki.server_cert, tls_key_file=pki.server_key, tls_client_ca_file=pki.ca
    )
    await server.start()
    yield server
    await server.stop(0)


async def test_tls_client_trusting_the_ca_connects(tls_server: GrpcServer, pki: Pki) -> None:
    status = await check(f"127.0.0.1:{tls_server.port}", root_certificates=pki.ca.read_bytes())
    assert status == health_pb2.HealthCheckResponse.SERVING


async def test_plaintext_client_cannot_talk_to_tls_server(tls_server: GrpcServer) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await check(f"127.0.0.1:{tls_server.port}")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mtls_client_with_certificate_connects(mtls_server: GrpcServer, pki: Pki) -> None:
    status = await check(
        f"127.0.0.1:{mtls_server.port}",
        root_certificates=pki.ca.read_bytes(),
        client_cert=pki.client_cert.read_bytes(),
        client_key=pki.client_key.read_bytes(),
    )
    assert status == health_pb2.HealthCheckResponse.SERVING


async def test_mtls_refuses_client_without_certificate(mtls_server: GrpcServer, pki: Pki) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await check(f"127.0.0.1:{mtls_server.port}", root_certificates=pki.ca.read_bytes())
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
