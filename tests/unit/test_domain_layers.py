"""Both services' domains are plain Python: no transport, database or metrics library,
and none of their own service's adapter packages (the adapters implement the domain's
ports, never the other way round)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import marketplace_bids.domain
import marketplace_execution.domain
import pytest

FORBIDDEN = ("grpc", "sqlalchemy", "asyncpg", "aiosqlite", "prometheus_client", "openai", "httpx")
ADAPTERS = {
    "marketplace_bids": ("api", "storage", "server"),
    "marketplace_execution": ("api", "storage", "llm", "server", "metrics"),
}


def _modules(package: object) -> list[str]:
    path = package.__path__  # type: ignore[attr-defined]
    prefix = package.__name__ + "."  # type: ignore[attr-defined]
    return [info.name for info in pkgutil.iter_modules(path, prefix)]


def _loaded_by(modules: list[str], forbidden: list[str]) -> list[str]:
    """The ``forbidden`` modules (or packages: their submodules too) that importing
    ``modules`` loads, in a fresh interpreter."""
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = {forbidden!r}\n"
        "print(json.dumps(sorted({m for m in sys.modules for b in bad"
        " if m == b or m.startswith(b + '.')})))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    names: list[str] = json.loads(found)
    return names


@pytest.mark.parametrize("package", [marketplace_bids.domain, marketplace_execution.domain])
def test_importing_the_domain_loads_no_adapter_library(package: object) -> None:
    modules = _modules(package)
    assert len(modules) > 3
    found = {name.split(".")[0] for name in _loaded_by(modules, list(FORBIDDEN))}
    assert not found, f"{package.__name__} pulls in {sorted(found)}"  # type: ignore[attr-defined]


@pytest.mark.parametrize("package", [marketplace_bids.domain, marketplace_execution.domain])
def test_the_domain_imports_none_of_its_service_adapters(package: object) -> None:
    service = package.__name__.split(".")[0]  # type: ignore[attr-defined]
    adapters = [f"{service}.{name}" for name in ADAPTERS[service]]
    found = _loaded_by(_modules(package), adapters)
    assert not found, f"{package.__name__} imports {found}"  # type: ignore[attr-defined]


def test_the_adapter_check_sees_an_adapter_import() -> None:
    """The check above would notice: importing an adapter loads it."""
    found = _loaded_by(["marketplace_execution.llm.offline"], ["marketplace_execution.llm"])
    assert "marketplace_execution.llm.offline" in found
