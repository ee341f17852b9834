"""docker-compose.yml agrees with the code: commands, env names, ports, probes, secrets, grace.

(Its schema is checked by scripts/check_deploy.sh in `make lint`.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from deploy_support import (
    COMPOSE,
    DOCKERFILE,
    read_env_file,
    script_for,
    seconds,
    settings_env_names,
)
from marketplace_execution.settings import ExecutionSettings

_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def compose() -> dict[str, Any]:
    import yaml

    with COMPOSE.open() as handle:
        loaded: dict[str, Any] = yaml.safe_load(handle)
    return loaded


def ours() -> dict[str, dict[str, Any]]:
    """The services that run the project's image."""
    services: dict[str, dict[str, Any]] = compose()["services"]
    return {n: s for n, s in services.items() if str(s.get("image", "")).startswith("marketplace")}


def servers() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in ours().items() if s["command"][1] == "serve"}


def default_of(value: str) -> str:
    """``${NAME:-default}`` -> ``default``; plain text as is."""
    match = _INTERPOLATION.fullmatch(value)
    if match is None:
        return value
    assert match.group(2) == "-", f"{value}: no default"
    return match.group(3)


def test_one_image_built_once_and_used_by_every_project_service() -> None:
    services = ours()
    assert len(services) == 4  # two migrations, two servers
    assert len({s["image"] for s in services.values()}) == 1
    built = [name for name, s in services.items() if "build" in s]
    assert len(built) == 1, built
    assert compose()["services"][built[0]]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert all(s.get("pull_policy") == "never" for n, s in services.items() if n not in built)


def test_every_command_is_a_console_script_and_sub_command() -> None:
    for service in ours().values():
        script_for(service["command"])


def test_every_environment_variable_is_a_setting_of_the_service_it_configures() -> None:
    known = settings_env_names()
    for name, service in ours().items():
        prefix = script_for(service["command"]).env_prefix
        for variable in service["environment"]:
            assert variable in known, f"{name}: {variable} is no setting of any Settings class"
            assert variable.startswith(prefix), f"{name}: {variable} is not {prefix}*"


def test_servers_have_a_healthcheck_with_their_own_health_command() -> None:
    for name, service in servers().items():
        prog = service["command"][0]
        assert service["healthcheck"]["test"] == ["CMD", prog, "health"], name
        script = script_for([prog, "health"])
        assert script.cli.health_service, f"{prog} health asks no particular service"


def test_postgres_is_healthy_only_over_tcp_and_migrations_retry() -> None:
    services = compose()["services"]
    test = services["postgres"]["healthcheck"]["test"]
    assert "pg_isready" in test
    assert test[test.index("-h") + 1] == "127.0.0.1"
    for name, service in ours().items():
        if service["command"][1] == "migrate":
            assert service["restart"] == "on-failure", name
            assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}, name
        else:
            migrate = f"{name}-migrate"
            assert service["depends_on"][migrate] == {"condition": "service_completed_successfully"}
    assert services["execution"]["depends_on"]["bids"] == {"condition": "service_healthy"}


def test_published_ports_are_the_settings_ports_and_scale() -> None:
    for name, service in servers().items():
        script = script_for(service["command"])
        defaults = script.defaults()
        env = service["environment"]
        grpc_port = int(env.get(f"{script.env_prefix}GRPC_PORT", defaults.grpc_port))
        metrics_port = int(env.get(f"{script.env_prefix}METRICS_PORT", defaults.metrics_port))
        published = {}
        for mapping in service["ports"]:
            host_ip, host_ports, container = mapping.split(":")
            assert host_ip == "127.0.0.1", f"{name}: {mapping} is published beyond loopback"
            # A range, one host port per replica: `--scale` does not collide.
            low, _, high = host_ports.partition("-")
            assert high, f"{name}: {mapping} allows one replica only"
            assert int(high) > int(low), mapping
            published[int(container)] = int(low)
        assert set(published) == {grpc_port, metrics_port}, name


def test_execution_reaches_every_bids_replica() -> None:
    services = compose()["services"]
    target = services["execution"]["environment"]["EXECUTION_BIDS_TARGET"]
    bids_port = script_for(services["bids"]["command"]).defaults().grpc_port
    assert target == f"dns:///bids:{bids_port}"


def test_llm_provider_is_chosen_explicitly_and_valid() -> None:
    env = compose()["services"]["execution"]["environment"]
    provider = default_of(env["EXECUTION_LLM_PROVIDER"])
    assert provider, "EXECUTION_LLM_PROVIDER must be set explicitly"
    assert ExecutionSettings(llm_provider=provider).llm_provider == provider


def test_stop_grace_covers_the_shutdown_grace_plus_5_s() -> None:
    for name, service in servers().items():
        script = script_for(service["command"])
        grace = float(
            service["environment"].get(
                f"{script.env_prefix}SHUTDOWN_GRACE_SECONDS",
                script.defaults().shutdown_grace_seconds,
            )
        )
        assert seconds(service["stop_grace_period"]) >= grace + 5, name


def test_the_required_secrets_are_exactly_what_make_env_writes(tmp_path: Path) -> None:
    from deploy_support import make_env_module

    make_env_module().write_compose_env(tmp_path / ".env", force=False)
    written = set(read_env_file(tmp_path / ".env"))
    required = {
        m.group(1) for m in _INTERPOLATION.finditer(COMPOSE.read_text()) if m.group(2) == "?"
    }
    assert required, "compose requires no secret?"
    assert required <= written, required - written


@pytest.mark.parametrize("word", ["TOKEN", "PASSWORD", "DATABASE_URL", "API_KEY"])
def test_no_secret_is_baked_into_the_image(word: str) -> None:
    instructions = DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
    env = [line for line in instructions if line.strip().startswith(("ENV", "ARG"))]
    assert env, "the Dockerfile sets no ENV?"
    assert not any(word in line for line in env)
