"""The LLM provider is explicit outside loopback; empty optional variables count as unset."""

from __future__ import annotations

import pytest
from marketplace_execution.llm.build import build_provider
from marketplace_execution.llm.openai_provider import OpenAIProvider
from marketplace_execution.settings import (
    ExecutionSettings,
    ProviderNotChosenError,
    check_llm_provider_chosen,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EXECUTION_LLM_PROVIDER", "EXECUTION_LLM_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "execution.internal"])
def test_a_public_bind_without_a_provider_is_refused_in_one_line(host: str) -> None:
    with pytest.raises(ProviderNotChosenError) as info:
        check_llm_provider_chosen(ExecutionSettings(grpc_host=host))
    message = str(info.value)
    assert "\n" not in message
    assert "EXECUTION_LLM_PROVIDER" in message
    assert "offline, openai" in message
    assert repr(host) in message


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_keeps_the_offline_default(host: str) -> None:
    settings = ExecutionSettings(grpc_host=host)
    check_llm_provider_chosen(settings)
    assert settings.llm_provider == "offline"
    assert not settings.llm_provider_chosen


@pytest.mark.parametrize("provider", ["offline", "openai"])
def test_a_provider_set_in_the_environment_is_accepted_on_a_public_bind(
    monkeypatch: pytest.MonkeyPatch, provider: str
) -> None:
    monkeypatch.setenv("EXECUTION_LLM_PROVIDER", provider)
    monkeypatch.setenv("EXECUTION_GRPC_HOST", "0.0.0.0")
    settings = ExecutionSettings()
    check_llm_provider_chosen(settings)
    assert settings.llm_provider == provider
    assert settings.llm_provider_chosen


def test_an_empty_provider_variable_is_not_a_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    # What compose passes for ${EXECUTION_LLM_PROVIDER:-}.
    monkeypatch.setenv("EXECUTION_LLM_PROVIDER", "")
    settings = ExecutionSettings(grpc_host="0.0.0.0")
    assert not settings.llm_provider_chosen
    with pytest.raises(ProviderNotChosenError):
        check_llm_provider_chosen(settings)


def test_an_empty_base_url_is_not_handed_to_the_openai_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXECUTION_LLM_BASE_URL", "")
    monkeypatch.setenv("EXECUTION_LLM_PROVIDER", "openai")
    monkeypatch.setenv("EXECUTION_LLM_MODEL", "m")
    settings = ExecutionSettings()
    assert settings.llm_base_url is None
    provider, _model = build_provider(settings)
    assert isinstance(provider, OpenAIProvider)
    assert "base_url=None" in repr(provider)
    client = provider._new_client()
    # An empty base URL would leave the client a relative URL with no host.
    assert client.base_url.is_absolute_url
    assert client.base_url.host


def test_an_empty_base_url_argument_is_unset_too() -> None:
    assert ExecutionSettings(llm_base_url="  ").llm_base_url is None


def test_other_empty_optional_variables_take_their_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXECUTION_TLS_CERT_FILE", "")
    monkeypatch.setenv("EXECUTION_PACING_MAX_CONCURRENCY", "")
    monkeypatch.setenv("EXECUTION_METRICS_HOST", "")
    settings = ExecutionSettings()
    assert settings.tls_cert_file is None
    assert settings.pacing_max_concurrency is None
    assert settings.metrics_host is None
