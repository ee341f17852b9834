"""ServiceSettings: environment parsing, validation, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest
from marketplace_common.auth import hash_token
from marketplace_common.settings import ServiceSettings, redact_url
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_")
    grpc_port: int = 50099
    api_key: SecretStr = SecretStr("")


def test_defaults_bind_loopback_with_safe_limits() -> None:
    settings = DemoSettings()
    assert settings.grpc_host == "127.0.0.1"
    assert settings.grpc_port == 50099
    assert settings.metrics_port == 0
    assert settings.shutdown_grace_seconds == 10
    assert settings.max_message_bytes == 4 * 1024 * 1024
    assert settings.log_json is None


def test_subclass_prefix_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_GRPC_PORT", "6000")
    monkeypatch.setenv("DEMO_LOG_LEVEL", "debug")
    monkeypatch.setenv("MARKETPLACE_GRPC_PORT", "7000")
    settings = DemoSettings()
    assert settings.grpc_port == 6000
    assert settings.log_level == "DEBUG"


def test_auth_tokens_parse_from_comma_separated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    one, two = f"{hash_token('a')}=service:execution", f"{hash_token('b')}=admin:ops"
    monkeypatch.setenv("DEMO_AUTH_TOKENS", f" {one} , {two},")
    assert DemoSettings().auth_tokens == [one, two]


def test_malformed_auth_token_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_AUTH_TOKENS", "raw-token-by-mistake")
    with pytest.raises(ValidationError) as info:
        DemoSettings()
    assert "raw-token-by-mistake" not in str(info.value)


def test_unknown_log_level_is_rejected() -> None:
    with pytest.raises(ValidationError):
        DemoSettings(log_level="LOUD")


def test_tls_key_without_cert_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="go together"):
        DemoSettings(tls_key_file=tmp_path / "key.pem")


def test_client_ca_without_server_cert_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="mTLS"):
        DemoSettings(tls_client_ca_file=tmp_path / "ca.pem")


def test_repr_hides_database_url() -> None:
    settings = DemoSettings(database_url="postgresql+asyncpg://u:hunter2@db/x")
    assert "hunter2" not in repr(settings)


def test_log_summary_redacts_secrets() -> None:
    settings = DemoSettings(
        database_url="postgresql+asyncpg://u:hunter2@db/x",
        api_key=SecretStr("sk-123"),
        auth_tokens=[f"{hash_token('a')}=admin:ops"],
    )
    summary = settings.log_summary()
    assert summary["database_url"] == "postgresql+asyncpg://u:***@db/x"
    assert summary["api_key"] == "**********"
    assert summary["auth_token_count"] == 1
    assert "auth_tokens" not in summary


def test_redact_url_keeps_urls_without_password() -> None:
    assert redact_url("sqlite+aiosqlite:///./var/bids.db") == "sqlite+aiosqlite:///./var/bids.db"


def test_port_sharing_only_among_the_processes_of_one_serve() -> None:
    from marketplace_bids.settings import BidsSettings
    from marketplace_common.server import server_options

    assert ("grpc.so_reuseport", 0) in server_options(BidsSettings())
    assert ("grpc.so_reuseport", 1) in server_options(BidsSettings(processes=2))


def test_processes_comes_from_the_environment_and_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from marketplace_execution.settings import ExecutionSettings

    monkeypatch.setenv("EXECUTION_PROCESSES", "4")
    assert ExecutionSettings().processes == 4
    assert ExecutionSettings().workers == 16  # the worker pool per process, unrelated
    monkeypatch.setenv("EXECUTION_PROCESSES", "0")
    with pytest.raises(ValidationError):
        ExecutionSettings()
