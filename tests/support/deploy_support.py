"""What the deployment-file tests compare against: the code's own settings classes, console
scripts and defaults, read from the code (so they follow every setting added there)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from marketplace_common.service_cli import ServiceCli
from pydantic import BaseModel
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"

# The composition roots import every settings class a running service builds.
COMPOSITION_ROOTS = ("marketplace_bids.server", "marketplace_execution.server")


def load_docs(path: Path) -> list[dict[str, Any]]:
    """Every YAML document of ``path`` (empty ones dropped)."""
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def _subclasses(cls: type[BaseSettings]) -> Iterator[type[BaseSettings]]:
    sub: type[BaseSettings]
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _field_names(model: type[BaseModel], prefix: str, delimiter: str | None) -> set[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        env = (alias or field.alias or f"{prefix}{name}").upper()
        names.add(env)
        annotation = field.annotation
        if delimiter and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _field_names(annotation, f"{env}{delimiter}", delimiter)
    return names


@cache
def settings_env_names() -> frozenset[str]:
    """Every environment variable some settings class of the services reads."""
    for module in COMPOSITION_ROOTS:
        importlib.import_module(module)
    names: set[str] = set()
    for cls in set(_subclasses(BaseSettings)):
        if not cls.__module__.startswith("marketplace"):
            continue
        config = cls.model_config
        prefix = str(config.get("env_prefix", ""))
        delimiter = config.get("env_nested_delimiter")
        names |= _field_names(cls, prefix, delimiter if isinstance(delimiter, str) else None)
    return frozenset(names)


@dataclass(frozen=True)
class Script:
    """A console script of pyproject.toml and the service CLI behind it."""

    name: str
    cli: ServiceCli[Any]

    @property
    def commands(self) -> frozenset[str]:
        parser = self.cli._parser()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return frozenset(action.choices)
        raise AssertionError(f"{self.name} has no sub-commands")

    @property
    def env_prefix(self) -> str:
        settings_cls: Any = self.cli.settings_factory
        return str(settings_cls.model_config["env_prefix"])

    def defaults(self) -> Any:
        """The settings as built with no environment (the defaults)."""
        settings_cls: Any = self.cli.settings_factory
        return settings_cls.model_construct()


@cache
def scripts() -> dict[str, Script]:
    """pyproject's console scripts of the services (a ServiceCli ``CLI``), by name;
    other scripts (marketctl, the client) run in no container."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found: dict[str, Script] = {}
    for name, target in project["scripts"].items():
        module_name, _, _attr = target.partition(":")
        module: ModuleType = importlib.import_module(module_name)
        cli = getattr(module, "CLI", None)
        if not isinstance(cli, ServiceCli):
            continue
        found[name] = Script(name, cli)
    return found


def script_for(command: list[str]) -> Script:
    """The console script a container command runs, checking the sub-command exists."""
    assert command, "an empty command"
    script = scripts().get(command[0])
    assert script is not None, f"{command[0]} is not a console script of pyproject.toml"
    assert len(command) >= 2, f"{command}: no sub-command"
    assert command[1] in script.commands, f"{command}: {script.name} has no {command[1]!r}"
    return script


@cache
def make_env_module() -> ModuleType:
    """scripts/make_env.py, imported by path."""
    spec = importlib.util.spec_from_file_location("make_env", ROOT / "scripts" / "make_env.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of an env file (comments skipped)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v for k, v in pairs if not k.lstrip().startswith("#")}


_DURATION = re.compile(r"^(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")


def seconds(duration: str) -> float:
    """A compose duration (``25s``, ``1m30s``) in seconds."""
    match = _DURATION.match(duration)
    assert duration, "an empty duration"
    assert match, f"not a duration: {duration!r}"
    return int(match.group(1) or 0) * 60 + float(match.group(2) or 0)


def dockerfile_user() -> tuple[int, int]:
    """The numeric ``USER uid:gid`` of the runtime stage."""
    users = re.findall(r"^USER\s+(\d+):(\d+)\s*$", DOCKERFILE.read_text(), re.M)
    assert users, "the Dockerfile must name a numeric USER uid:gid"
    uid, gid = users[-1]
    return int(uid), int(gid)
