"""``<prog> health``: ask a running service's grpc.health.v1.Health whether it serves.

The probe of container healthchecks (compose) and of anyone scripting a
rollout: it exits 0 only when the answer is SERVING, 1 on any other answer
(NOT_SERVING while shutting down, SERVICE_UNKNOWN), 2 when the service cannot
be reached or did not answer in time. It prints one line saying which.

Health is an open method (no token needed), so the probe carries none.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 (compared, not bound)


class ProbeExit(enum.IntEnum):
    """The exit codes of the probe."""

    SERVING = 0
    NOT_SERVING = 1
    UNREACHABLE = 2


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What the probe saw: the exit code and one line for a person."""

    code: ProbeExit
    message: str


def local_target(host: str, port: int) -> str:
    """The address a probe inside the same host/container dials for a bind address.

    A wildcard bind (``0.0.0.0``, ``::``) is reached on loopback.
    """
    if host.strip() in WILDCARD_HOSTS:
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class ProbeTls:
    """TLS for the probe: the CA to trust, a client certificate for mutual TLS, and
    the name to expect in the server's certificate (it is dialled on loopback)."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None


def _channel(target: str, tls: ProbeTls | None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(target)
    key = tls.key_file.read_bytes() if tls.key_file else None
    cert = tls.cert_file.read_bytes() if tls.cert_file else None
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca_file.read_bytes(), private_key=key, certificate_chain=cert
    )
    options = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
    return grpc.secure_channel(target, credentials, options=options)


def probe(target: str, service: str, *, timeout: float, tls: ProbeTls | None = None) -> ProbeResult:
    """One ``Health/Check`` of ``service`` at ``target`` (over TLS when ``tls`` is given)."""
    channel = _channel(target, tls)
    name = service or '"" (the whole server)'
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            if code == grpc.StatusCode.NOT_FOUND:
                return ProbeResult(ProbeExit.NOT_SERVING, f"{target}: {name} is not known there")
            label = code.name if code is not None else "error"
            return ProbeResult(ProbeExit.UNREACHABLE, f"{target}: {label}: {detail}")
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status == health_pb2.HealthCheckResponse.SERVING:
        return ProbeResult(ProbeExit.SERVING, f"{target}: {name} {status}")
    return ProbeResult(ProbeExit.NOT_SERVING, f"{target}: {name} {status}")
