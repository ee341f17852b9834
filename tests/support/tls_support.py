"""Certificates made in the test (trustme): a CA, a server certificate and client
certificates, written as PEM files the way an operator would configure them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme

SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
CLIENT_NAME = "execution.internal"
"""The client certificate's SAN (its CN is ``execution``)."""
STRANGER_NAME = "stranger.internal"


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """A CA and what it issued; ``other_ca`` signed nothing here (a wrong trust root)."""

    ca: Path
    other_ca: Path
    server: CertFiles
    client: CertFiles
    stranger: CertFiles

    @property
    def ca_pem(self) -> bytes:
        return self.ca.read_bytes()


def _write(leaf: trustme.LeafCert, directory: Path, name: str) -> CertFiles:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return CertFiles(cert, key)


def make_pki(directory: Path, server_names: tuple[str, ...] = SERVER_NAMES) -> Pki:
    """A fresh CA in ``directory`` with a server certificate for ``server_names``,
    a client certificate for CLIENT_NAME and one for STRANGER_NAME."""
    ca, other = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    other.cert_pem.write_to_path(str(directory / "other-ca.pem"))
    return Pki(
        ca=directory / "ca.pem",
        other_ca=directory / "other-ca.pem",
        server=_write(ca.issue_cert(*server_names, common_name="bids"), directory, "server"),
        client=_write(ca.issue_cert(CLIENT_NAME, common_name="execution"), directory, "client"),
        stranger=_write(
            ca.issue_cert(STRANGER_NAME, common_name="stranger"), directory, "stranger"
        ),
    )
