"""The settings every gRPC service shares (pydantic-settings v2).

Each service subclasses :class:`ServiceSettings` with its own prefix::

    class BidsSettings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="BIDS_")
        grpc_port: int = 50051
        metrics_port: int = 9101
        database_url: str = "sqlite+aiosqlite:///./var/bids.db"

and builds it once, in its composition root (``BidsSettings()``), never at
import time. ``repr(settings)`` hides the database URL; use
:meth:`ServiceSettings.log_summary` for a startup log line.

An environment variable set to the empty string counts as not set (the
default applies): compose passes ``${VAR:-}`` for every optional variable, and
``EXECUTION_LLM_BASE_URL=""`` must not become an empty URL, nor ``..._FILE=""``
the current directory.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from marketplace_common.auth import parse_token_entry
from marketplace_common.auth_cert import parse_cert_principal_entry

MIB = 1024 * 1024
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*@")


def redact_url(url: str) -> str:
    """Replace the password of ``scheme://user:password@host/...`` with ``***``."""
    return _URL_PASSWORD.sub(r"\1***@", url)


class ServiceSettings(BaseSettings):
    """Base settings of a gRPC service; subclasses set ``env_prefix``."""

    model_config = SettingsConfigDict(
        env_prefix="MARKETPLACE_",
        extra="ignore",
        validate_default=True,
        hide_input_in_errors=True,
        env_ignore_empty=True,
    )

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str | None = None
    """Where the Prometheus listener binds; None = the same as grpc_host."""
    metrics_port: int = Field(default=0, ge=0, le=65535)
    """0 turns the metrics listener off."""
    database_url: str = Field(default="sqlite+aiosqlite:///./var/service.db", repr=False)
    """May hold a password: never logged as is (see log_summary)."""
    log_level: str = "INFO"
    log_json: bool | None = None
    """None = auto: JSON when stderr is not a terminal."""
    auth_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Hashed entries ``sha256:<hex>=<role>:<subject>``, comma separated in the environment."""
    auth_cert_principals: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Entries ``<certificate CN or SAN>=<role>:<subject>``, comma separated: with mTLS,
    a verified client certificate stands for that principal (``auth_cert``)."""
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    """When set, clients must present a certificate signed by this CA (mTLS)."""
    max_connection_age_seconds: float | None = Field(default=None, gt=0)
    """Close client connections after this long (GOAWAY, in-flight calls finish): a
    client on a ``dns:///`` target then resolves again and finds new replicas."""
    max_connection_age_grace_seconds: float = Field(default=30.0, ge=0)
    """How long calls in flight on an aged connection may still run."""
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    max_message_bytes: int = Field(default=4 * MIB, gt=0)
    keepalive_time_seconds: float = Field(default=60.0, gt=0)
    """How often the server pings an idle connection."""
    keepalive_timeout_seconds: float = Field(default=20.0, gt=0)
    """How long a ping may go unanswered before the connection is closed."""
    keepalive_min_client_ping_seconds: float = Field(default=10.0, gt=0)
    """Clients pinging more often than this get a GOAWAY (too_many_pings)."""
    max_concurrent_rpcs: int | None = Field(default=None, gt=0)
    processes: int = Field(default=1, ge=1, le=64)
    """Server processes sharing the gRPC port (SO_REUSEPORT) under one supervising
    process; ``serve --workers N`` overrides it. More than 1 needs PostgreSQL
    (``marketplace_common.supervisor``)."""

    @field_validator("auth_tokens", "auth_cert_principals", mode="before")
    @classmethod
    def _split_tokens(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part for part in (p.strip() for p in text.split(",")) if part]
        return value

    @field_validator("auth_tokens")
    @classmethod
    def _parse_tokens(cls, value: list[str]) -> list[str]:
        return [str(parse_token_entry(entry)) for entry in value]

    @field_validator("auth_cert_principals")
    @classmethod
    def _parse_cert_principals(cls, value: list[str]) -> list[str]:
        return [str(parse_cert_principal_entry(entry)) for entry in value]

    @field_validator("log_level", mode="before")
    @classmethod
    def _check_level(cls, value: Any) -> Any:
        if isinstance(value, str):
            name = value.strip().upper()
            if name not in logging.getLevelNamesMapping():
                raise ValueError(f"unknown log level {value!r}")
            return name
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file")
        if self.auth_cert_principals and self.tls_client_ca_file is None:
            raise ValueError(
                "auth_cert_principals needs tls_client_ca_file (mTLS): "
                "without it no client certificate is asked for, nor verified"
            )
        return self

    def log_summary(self) -> dict[str, Any]:
        """The settings as fields for a startup log line, with secrets redacted."""
        summary: dict[str, Any] = {}
        for name, value in self:
            if name == "auth_tokens":
                summary["auth_token_count"] = len(value)
            elif name == "database_url":
                summary[name] = redact_url(value)
            elif hasattr(value, "get_secret_value"):
                summary[name] = "**********" if value.get_secret_value() else ""
            elif isinstance(value, Path):
                summary[name] = str(value)
            else:
                summary[name] = value
        return summary
