"""Tokens, entries, principals and protected mode (no server needed)."""

from __future__ import annotations

import pytest
from marketplace_common.auth import (
    LOCAL_DEV_PRINCIPAL,
    AuthConfigError,
    Principal,
    Role,
    TokenAuthenticator,
    as_principal,
    bearer_token,
    check_bind_allowed,
    check_role,
    current_principal,
    hash_token,
    is_loopback_host,
    is_open_method,
    main,
    new_token,
    parse_token_entry,
    require_role,
)
from marketplace_common.errors import PermissionDeniedError, UnauthenticatedError


def entry(token: str, who: str) -> str:
    return f"{hash_token(token)}={who}"


def test_hash_token_is_prefixed_sha256_hex() -> None:
    assert hash_token("abc") == (
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_new_token_has_at_least_256_bits() -> None:
    token = new_token()
    assert len(token) >= 43
    assert token != new_token()


def test_parse_token_entry_reads_role_and_subject() -> None:
    parsed = parse_token_entry(entry("t", "agent:agent-7"))
    assert parsed.principal == Principal(Role.AGENT, "agent-7")


def test_parse_token_entry_round_trips_through_str() -> None:
    text = entry("t", "client:alice@example.com")
    assert str(parse_token_entry(text)) == text


@pytest.mark.parametrize(
    "bad",
    [
        "plain-token",
        "sha256:abc=client:alice",
        f"{hash_token('t')}=root:alice",
        f"{hash_token('t')}=client:",
        f"{hash_token('t')}=client",
    ],
)
def test_parse_token_entry_rejects_malformed_entries(bad: str) -> None:
    with pytest.raises(AuthConfigError):
        parse_token_entry(bad)


def test_parse_token_entry_error_does_not_echo_the_entry() -> None:
    with pytest.raises(AuthConfigError) as info:
        parse_token_entry("my-raw-secret-token")
    assert "my-raw-secret-token" not in str(info.value)


def test_authenticator_maps_token_to_principal() -> None:
    auth = TokenAuthenticator([entry("s3cret", "service:execution")])
    assert auth.authenticate_token("s3cret") == Principal(Role.SERVICE, "execution")


def test_authenticator_returns_none_for_unknown_token() -> None:
    auth = TokenAuthenticator([entry("s3cret", "service:execution")])
    assert auth.authenticate_token("other") is None


def test_authenticate_metadata_without_token_is_unauthenticated() -> None:
    auth = TokenAuthenticator([entry("s3cret", "service:execution")])
    with pytest.raises(UnauthenticatedError):
        auth.authenticate_metadata([("x-request-id", "r")])


def test_authenticate_metadata_with_wrong_token_is_unauthenticated() -> None:
    auth = TokenAuthenticator([entry("s3cret", "service:execution")])
    with pytest.raises(UnauthenticatedError):
        auth.authenticate_metadata([("authorization", "Bearer nope")])


def test_bearer_token_accepts_any_scheme_case() -> None:
    assert bearer_token([("authorization", "bearer abc")]) == "abc"


def test_bearer_token_ignores_other_schemes() -> None:
    assert bearer_token([("authorization", "Basic YWxhZGRpbjpvcGVu")]) is None


def test_empty_authenticator_is_disabled() -> None:
    assert not TokenAuthenticator().enabled


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.0.0.5", "example.internal"])
def test_non_loopback_hosts(host: str) -> None:
    assert not is_loopback_host(host)


def test_protected_mode_refuses_wildcard_bind_without_tokens() -> None:
    with pytest.raises(AuthConfigError, match="protected mode"):
        check_bind_allowed("0.0.0.0", TokenAuthenticator())


def test_protected_mode_allows_wildcard_bind_with_tokens() -> None:
    check_bind_allowed("0.0.0.0", TokenAuthenticator([entry("t", "admin:ops")]))


def test_protected_mode_allows_loopback_without_tokens() -> None:
    check_bind_allowed("127.0.0.1", TokenAuthenticator())


def test_health_and_reflection_are_open_methods() -> None:
    assert is_open_method("/grpc.health.v1.Health/Check")
    assert is_open_method("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert is_open_method("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
    assert not is_open_method("/marketplace.bids.v1.BidService/GetBid")


def test_current_principal_outside_an_rpc_is_unauthenticated() -> None:
    with pytest.raises(UnauthenticatedError):
        current_principal()


def test_require_role_accepts_listed_role() -> None:
    with as_principal(Principal(Role.AGENT, "a1")):
        assert require_role(Role.AGENT, Role.SERVICE).subject == "a1"


def test_require_role_refuses_other_role() -> None:
    with (
        as_principal(Principal(Role.CLIENT, "c@example.com")),
        pytest.raises(PermissionDeniedError),
    ):
        require_role(Role.SERVICE)


def test_require_role_lets_admin_through() -> None:
    with as_principal(LOCAL_DEV_PRINCIPAL):
        assert require_role(Role.SERVICE) is LOCAL_DEV_PRINCIPAL


def test_check_role_names_the_action_and_the_roles_that_may() -> None:
    check_role(Principal(Role.AGENT, "a1"), "submit", Role.AGENT)
    check_role(LOCAL_DEV_PRINCIPAL, "submit", Role.AGENT)
    with pytest.raises(PermissionDeniedError) as refused:
        check_role(Principal(Role.CLIENT, "c@example.com"), "submit", Role.AGENT, Role.SERVICE)
    assert refused.value.message == "role 'client' may not submit (needs agent, service or admin)"
    assert refused.value.reason == "PERMISSION_DENIED"


def test_both_services_refuse_a_role_with_the_kits_check_and_error() -> None:
    from marketplace_bids.domain import access as bids_access
    from marketplace_execution.domain import access as execution_access

    assert bids_access.check_role is execution_access.check_role is check_role
    client = Principal(Role.CLIENT, "c@example.com")
    with pytest.raises(PermissionDeniedError) as by_bids:
        bids_access.task_list_scope(Principal(Role.AGENT, "a1"), None)
    with pytest.raises(PermissionDeniedError) as by_execution:
        execution_access.require_submitter_role(client)
    assert type(by_bids.value) is type(by_execution.value) is PermissionDeniedError
    assert (
        by_bids.value.message == "role 'agent' may not list tasks (needs client, service or admin)"
    )
    assert by_execution.value.message == (
        "role 'client' may not submit executions (needs agent, service or admin)"
    )


def test_new_token_command_prints_token_and_matching_entry(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["new-token", "--role", "service", "--subject", "execution"]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    auth = TokenAuthenticator([lines["entry"]])
    assert auth.authenticate_token(lines["token"]) == Principal(Role.SERVICE, "execution")


def test_hash_token_command_prints_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hash-token", "abc", "--role", "admin", "--subject", "ops"]) == 0
    assert capsys.readouterr().out.strip() == f"entry: {hash_token('abc')}=admin:ops"
