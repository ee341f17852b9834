"""Client certificates as principals: with mutual TLS, a verified certificate may stand
for a caller, so a service authenticates without a bearer token.

One entry per certificate name, comma separated in ``<PREFIX>_AUTH_CERT_PRINCIPALS``::

    <name>=<role>:<subject>          e.g.  execution.internal=service:execution

A call without a bearer token whose client certificate has ``<name>`` as its
subject common name (CN) or as one of its subject alternative names (DNS,
URI, e-mail or IP) is that principal. The certificate is the one the TLS
handshake verified against ``<PREFIX>_TLS_CLIENT_CA_FILE``; the setting needs
that file (without mTLS no certificate is asked for, so nothing could match).

A bearer token, when a call carries one, decides alone: a wrong token is
refused even with a good certificate. A certificate whose names match entries
of two different principals is refused (UNAUTHENTICATED), never guessed at.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from marketplace_common.auth import AuthConfigError, Principal, parse_principal
from marketplace_common.errors import UnauthenticatedError

# Keys of grpc's auth context (ServicerContext.auth_context()) naming the peer.
COMMON_NAME_KEY = "x509_common_name"
SAN_KEY = "x509_subject_alternative_name"

AuthContext = Mapping[str, Iterable[bytes]]


@dataclass(frozen=True, slots=True)
class CertPrincipalEntry:
    """One configured certificate name and the principal it stands for."""

    name: str
    principal: Principal

    def __str__(self) -> str:
        return f"{self.name}={self.principal.role.value}:{self.principal.subject}"


def parse_cert_principal_entry(entry: str) -> CertPrincipalEntry:
    """Parse ``<name>=<role>:<subject>``; raise AuthConfigError when malformed."""
    name, sep, who = entry.strip().partition("=")
    if not sep or not name.strip():
        raise AuthConfigError(
            "auth cert principal entry must look like <certificate name>=<role>:<subject>"
        )
    return CertPrincipalEntry(name.strip(), parse_principal(who, what="auth cert principal entry"))


def certificate_names(auth_context: AuthContext) -> list[str]:
    """The verified peer certificate's CN and SANs (empty without a client certificate)."""
    names: list[str] = []
    for key in (COMMON_NAME_KEY, SAN_KEY):
        for value in auth_context.get(key, ()):
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            if text and text not in names:
                names.append(text)
    return names


class CertificatePrincipals:
    """Maps a verified client certificate to the principal of a configured entry."""

    def __init__(self, entries: Iterable[str | CertPrincipalEntry] = ()) -> None:
        parsed = [
            e if isinstance(e, CertPrincipalEntry) else parse_cert_principal_entry(e)
            for e in entries
        ]
        by_name: dict[str, Principal] = {}
        for item in parsed:
            known = by_name.get(item.name)
            if known is not None and known != item.principal:
                raise AuthConfigError(
                    f"auth cert principal entries give {item.name!r} two principals"
                )
            by_name[item.name] = item.principal
        self._by_name = by_name

    @property
    def enabled(self) -> bool:
        """True when at least one entry is configured."""
        return bool(self._by_name)

    def authenticate(self, auth_context: AuthContext) -> Principal | None:
        """The principal the peer's certificate stands for, or None when none matches.

        Raises UnauthenticatedError when its names match two different principals.
        """
        found = {self._by_name[n] for n in certificate_names(auth_context) if n in self._by_name}
        if len(found) > 1:
            raise UnauthenticatedError("the client certificate matches several principals")
        return next(iter(found), None)
