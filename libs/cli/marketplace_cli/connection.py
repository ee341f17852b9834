"""Where marketctl connects and how: targets, bearer token, TLS, call timeout.

Everything comes from global flags or the MARKETCTL_* environment variables;
the TLS options mirror the services' (a CA to trust, a client certificate and
key for mutual TLS, a server name override).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc

DEFAULT_BIDS = "127.0.0.1:50051"
DEFAULT_EXECUTION = "127.0.0.1:50052"
REQUEST_ID_HEADER = "x-request-id"


class ConfigError(Exception):
    """Options that cannot work together (reported as a usage error)."""


@dataclass(frozen=True)
class Connection:
    """The connection settings of one marketctl run."""

    bids: str = DEFAULT_BIDS
    execution: str = DEFAULT_EXECUTION
    token: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    timeout: float = 30.0
    _channels: dict[str, grpc.Channel] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("--cert-file and --key-file go together (mutual TLS)")
        if self.timeout <= 0:
            raise ConfigError("--timeout must be above zero")

    @property
    def uses_tls(self) -> bool:
        return self.tls or any(f is not None for f in (self.ca_file, self.cert_file))

    def channel(self, target: str) -> grpc.Channel:
        """One channel per target for the whole run."""
        existing = self._channels.get(target)
        if existing is not None:
            return existing
        options: list[tuple[str, str | int]] = []
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        if self.uses_tls:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(self.ca_file),
                private_key=_read(self.key_file),
                certificate_chain=_read(self.cert_file),
            )
            made = grpc.secure_channel(target, creds, options=options)
        else:
            made = grpc.insecure_channel(target, options=options)
        self._channels[target] = made
        return made

    def metadata(self, request_id: str | None = None) -> tuple[tuple[str, str], ...]:
        """The call metadata: the bearer token when given, and a request id for the logs."""
        pairs: list[tuple[str, str]] = []
        if self.token:
            pairs.append(("authorization", f"Bearer {self.token}"))
        if request_id:
            pairs.append((REQUEST_ID_HEADER, request_id))
        return tuple(pairs)

    def close(self) -> None:
        for made in self._channels.values():
            made.close()
        self._channels.clear()


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
