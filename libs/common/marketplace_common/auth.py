"""Bearer-token authentication: roles, principals and hashed token entries.

Tokens are configured *hashed*, one entry per token::

    sha256:<64 hex digits>=<role>:<subject>

for example ``sha256:9f86...=service:execution`` (a comma separated list in
``<PREFIX>_AUTH_TOKENS``). A caller presents the raw token as
``authorization: Bearer <token>`` metadata; the server hashes it and compares
the hash with every configured one in constant time.

Create a token and its entry with::

    python -m marketplace_common.auth new-token --role service --subject execution

With mutual TLS a verified client certificate may stand for a principal too
(``auth_cert``, ``<PREFIX>_AUTH_CERT_PRINCIPALS``).

Protected mode (as in Redis): a server bound to a non-loopback address with
neither tokens nor certificate principals configured refuses to start
(:func:`check_bind_allowed`). On a loopback address with neither configured,
authentication is off and every caller is ``Principal(Role.ADMIN, "local-dev")``:
the zero-configuration development mode.

Health (``grpc.health.v1.Health``) and reflection are always open.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import hashlib
import hmac
import ipaddress
import secrets
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass

from marketplace_common.errors import PermissionDeniedError, UnauthenticatedError

HASH_PREFIX = "sha256:"
AUTHORIZATION_KEY = "authorization"
LOCAL_DEV_SUBJECT = "local-dev"

# Method prefixes that never need a token: probes and tooling must work
# before anyone has credentials.
OPEN_METHOD_PREFIXES: tuple[str, ...] = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


class Role(enum.StrEnum):
    """What kind of caller a principal is; the value is the configured name."""

    CLIENT = "client"
    AGENT = "agent"
    SERVICE = "service"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a role and a subject (an e-mail, agent id, service name)."""

    role: Role
    subject: str


LOCAL_DEV_PRINCIPAL = Principal(Role.ADMIN, LOCAL_DEV_SUBJECT)


def actor_name(principal: Principal) -> str:
    """How both services record a principal (audit events, ``submitted_by``,
    idempotency fingerprints): ``role:subject``."""
    return f"{principal.role.value}:{principal.subject}"


class AuthConfigError(ValueError):
    """The authentication configuration is invalid or unsafe (the server must not start)."""


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """One configured token: the hex SHA-256 of the raw token and who it belongs to."""

    digest: str
    principal: Principal

    def __str__(self) -> str:
        return f"{HASH_PREFIX}{self.digest}={self.principal.role.value}:{self.principal.subject}"


def new_token() -> str:
    """Return a fresh random token with 256 bits of entropy (URL-safe text)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Return the configured form of a raw token's hash: ``sha256:<hex>``."""
    return HASH_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_token_entry(entry: str) -> TokenEntry:
    """Parse ``sha256:<hex>=<role>:<subject>``; raise AuthConfigError when malformed.

    The error message never repeats the entry (it might be a raw token pasted by mistake).
    """
    text = entry.strip()
    hashed, sep, who = text.partition("=")
    if not sep or not hashed.startswith(HASH_PREFIX):
        raise AuthConfigError("auth token entry must look like sha256:<hex>=<role>:<subject>")
    digest = hashed.removeprefix(HASH_PREFIX).lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise AuthConfigError("auth token entry: the hash must be 64 hex digits")
    return TokenEntry(digest, parse_principal(who, what="auth token entry"))


def parse_principal(text: str, *, what: str = "principal") -> Principal:
    """Parse ``<role>:<subject>``; AuthConfigError (starting with ``what``) when malformed."""
    role_name, sep, subject = text.partition(":")
    try:
        role = Role(role_name.strip().lower())
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise AuthConfigError(f"{what}: unknown role (one of {roles})") from None
    if not sep or not subject.strip():
        raise AuthConfigError(f"{what}: the subject after <role>: is empty")
    return Principal(role, subject.strip())


class TokenAuthenticator:
    """Maps a presented bearer token to the principal of its configured entry.

    An authenticator with no entries is *disabled*: the server treats every
    caller as the local development principal, which it only allows on loopback
    (see :func:`check_bind_allowed`).
    """

    def __init__(self, entries: Iterable[str | TokenEntry] = ()) -> None:
        parsed = [e if isinstance(e, TokenEntry) else parse_token_entry(e) for e in entries]
        self._entries: tuple[tuple[bytes, Principal], ...] = tuple(
            (bytes.fromhex(e.digest), e.principal) for e in parsed
        )

    @property
    def enabled(self) -> bool:
        """True when at least one token is configured."""
        return bool(self._entries)

    def authenticate_token(self, token: str) -> Principal | None:
        """Return the principal owning ``token``, or None when it matches no entry.

        Every entry is compared (no early exit) with a constant-time compare, so
        timing reveals neither which entry matched nor how much of a hash did.
        """
        presented = hashlib.sha256(token.encode("utf-8")).digest()
        found: Principal | None = None
        for digest, principal in self._entries:
            if hmac.compare_digest(presented, digest) and found is None:
                found = principal
        return found

    def authenticate_metadata(self, metadata: Iterable[tuple[str, str | bytes]]) -> Principal:
        """Authenticate a call from its invocation metadata.

        Raises UnauthenticatedError when the bearer token is missing or unknown.
        """
        token = bearer_token(metadata)
        if token is None:
            raise UnauthenticatedError("missing bearer token (authorization: Bearer <token>)")
        principal = self.authenticate_token(token)
        if principal is None:
            raise UnauthenticatedError("invalid bearer token")
        return principal


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """Return the token of the first ``authorization: Bearer <token>`` entry, if any."""
    for key, value in metadata:
        if key.lower() != AUTHORIZATION_KEY:
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return None


def is_open_method(method: str) -> bool:
    """True for the methods that never need a token (health and reflection)."""
    return method.startswith(OPEN_METHOD_PREFIXES)


def is_loopback_host(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine.

    Wildcards (``0.0.0.0``, ``::``, empty) and any name but ``localhost`` count
    as non-loopback: when unsure, protect.
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind_allowed(
    host: str,
    authenticator: TokenAuthenticator,
    *,
    tokens_setting: str = "<PREFIX>_AUTH_TOKENS",
    certificate_auth: bool = False,
) -> None:
    """Protected mode: refuse a non-loopback bind when no token is configured.

    ``certificate_auth`` (client certificates mapped to principals, see
    ``auth_cert``) counts as authentication too. ``tokens_setting`` names the
    environment variable in the refusal message.
    """
    if authenticator.enabled or certificate_auth or is_loopback_host(host):
        return
    raise AuthConfigError(
        f"refusing to listen on {host!r} without authentication (protected mode): "
        f"configure {tokens_setting} with hashed tokens "
        "(python -m marketplace_common.auth new-token --role admin --subject ops), "
        "or bind to 127.0.0.1"
    )


# --- the per-RPC principal -------------------------------------------------------

_principal: ContextVar[Principal | None] = ContextVar("marketplace_principal", default=None)


def current_principal() -> Principal:
    """The principal of the RPC being served; UnauthenticatedError outside an authenticated RPC."""
    principal = _principal.get()
    if principal is None:
        raise UnauthenticatedError("no authenticated caller")
    return principal


def set_current_principal(principal: Principal | None) -> Token[Principal | None]:
    """Bind the principal for the current context (the auth interceptor does this per RPC)."""
    return _principal.set(principal)


def reset_current_principal(token: Token[Principal | None]) -> None:
    """Undo :func:`set_current_principal`."""
    _principal.reset(token)


@contextlib.contextmanager
def as_principal(principal: Principal) -> Iterator[Principal]:
    """Run a block as ``principal`` (for tests and background jobs)."""
    token = _principal.set(principal)
    try:
        yield principal
    finally:
        _principal.reset(token)


def check_role(principal: Principal, action: str, *roles: Role) -> None:
    """PERMISSION_DENIED unless ``principal`` is admin or has one of ``roles``.

    The role check of both services (``domain/access.py``), with one message:
    ``role 'client' may not <action> (needs agent, service or admin)``. Only for
    refusals that depend on the role alone: they reveal nothing about any
    stored resource (ownership refusals are each service's own rules).
    """
    if principal.role is Role.ADMIN or principal.role in roles:
        return
    allowed = " or ".join(filter(None, (", ".join(r.value for r in roles), "admin")))
    raise PermissionDeniedError(f"role {principal.role.value!r} may not {action} (needs {allowed})")


def require_role(*roles: Role) -> Principal:
    """Return the current principal if its role is one of ``roles`` (``check_role``).

    ADMIN passes every check. Raises PermissionDeniedError otherwise (and
    UnauthenticatedError when there is no caller at all).
    """
    principal = current_principal()
    check_role(principal, "call this", *roles)
    return principal


# --- command line ------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m marketplace_common.auth new-token|hash-token``."""
    parser = argparse.ArgumentParser(prog="python -m marketplace_common.auth")
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new-token", help="print a fresh 256-bit token and its entry")
    hashed = commands.add_parser("hash-token", help="print the entry for an existing token")
    hashed.add_argument("token", nargs="?", help="the raw token (default: read from stdin)")
    for sub in (new, hashed):
        sub.add_argument("--role", choices=[r.value for r in Role], default=Role.CLIENT.value)
        sub.add_argument("--subject", required=True, help="e-mail, agent id or service name")
    args = parser.parse_args(argv)
    token: str = (
        new_token() if args.command == "new-token" else (args.token or sys.stdin.readline().strip())
    )
    if not token:
        parser.error("empty token")
    entry = parse_token_entry(f"{hash_token(token)}={args.role}:{args.subject}")
    if args.command == "new-token":
        print(f"token: {token}")
    print(f"entry: {entry}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
