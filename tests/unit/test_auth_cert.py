"""Certificate principals: entries, matching a verified certificate's names, settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from marketplace_common.auth import AuthConfigError, Principal, Role
from marketplace_common.auth_cert import (
    CertificatePrincipals,
    certificate_names,
    parse_cert_principal_entry,
)
from marketplace_common.errors import UnauthenticatedError
from marketplace_common.settings import ServiceSettings
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

SERVICE = Principal(Role.SERVICE, "execution")


def peer(cn: str | None = None, *sans: str) -> dict[str, list[bytes]]:
    """An auth context as grpc reports a verified client certificate."""
    context: dict[str, list[bytes]] = {"transport_security_type": [b"ssl"]}
    if cn is not None:
        context["x509_common_name"] = [cn.encode()]
    if sans:
        context["x509_subject_alternative_name"] = [s.encode() for s in sans]
    return context


def test_entry_parses_name_role_and_subject_and_round_trips() -> None:
    entry = parse_cert_principal_entry(" execution.internal = service:execution ")
    assert (entry.name, entry.principal) == ("execution.internal", SERVICE)
    assert str(entry) == "execution.internal=service:execution"


@pytest.mark.parametrize(
    "bad", ["execution.internal", "=service:execution", "x=root:ops", "x=service:", "x=service"]
)
def test_malformed_entries_are_refused(bad: str) -> None:
    with pytest.raises(AuthConfigError):
        parse_cert_principal_entry(bad)


def test_one_name_for_two_principals_is_refused() -> None:
    with pytest.raises(AuthConfigError, match="two principals"):
        CertificatePrincipals(["x=service:execution", "x=admin:ops"])


def test_a_san_or_the_common_name_matches() -> None:
    certs = CertificatePrincipals(["execution.internal=service:execution", "ops=admin:ops"])
    assert certs.authenticate(peer("execution", "execution.internal")) == SERVICE
    assert certs.authenticate(peer("ops")) == Principal(Role.ADMIN, "ops")


def test_no_certificate_or_no_matching_name_is_nobody() -> None:
    certs = CertificatePrincipals(["execution.internal=service:execution"])
    assert certs.authenticate({}) is None
    assert certs.authenticate(peer("execution", "other.internal")) is None
    # A suffix or prefix is not the name.
    assert (
        certs.authenticate(peer(None, "evil-execution.internal", "execution.internal.evil")) is None
    )


def test_names_of_two_principals_on_one_certificate_are_refused() -> None:
    certs = CertificatePrincipals(["a.internal=service:execution", "b.internal=admin:ops"])
    with pytest.raises(UnauthenticatedError, match="several principals"):
        certs.authenticate(peer(None, "a.internal", "b.internal"))


def test_two_names_of_the_same_principal_are_one_principal() -> None:
    certs = CertificatePrincipals(["execution=service:execution", "e.internal=service:execution"])
    assert certs.authenticate(peer("execution", "e.internal")) == SERVICE


def test_certificate_names_lists_cn_then_sans_once() -> None:
    assert certificate_names(peer("a", "b", "a")) == ["a", "b"]


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_")


def test_settings_parse_the_comma_separated_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEMO_AUTH_CERT_PRINCIPALS", "a=service:execution , b=admin:ops,")
    settings = DemoSettings(
        tls_cert_file=tmp_path / "c",
        tls_key_file=tmp_path / "k",
        tls_client_ca_file=tmp_path / "ca",
    )
    assert settings.auth_cert_principals == ["a=service:execution", "b=admin:ops"]


def test_settings_refuse_certificate_principals_without_client_ca(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEMO_AUTH_CERT_PRINCIPALS", "a=service:execution")
    with pytest.raises(ValidationError, match="tls_client_ca_file"):
        DemoSettings(tls_cert_file=tmp_path / "c", tls_key_file=tmp_path / "k")
