"""Both services' domains are plain Python: no transport, database or metrics library."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import marketplace_bids.domain
import marketplace_execution.domain
import pytest

FORBIDDEN = ("grpc", "sqlalchemy", "asyncpg", "aiosqlite", "prometheus_client", "openai", "httpx")


def _modules(package: object) -> list[str]:
    path = package.__path__  # type: ignore[attr-defined]
    prefix = package.__name__ + "."  # type: ignore[attr-defined]
    return [info.name for info in pkgutil.iter_modules(path, prefix)]


@pytest.mark.parametrize("package", [marketplace_bids.domain, marketplace_execution.domain])
def test_importing_the_domain_loads_no_adapter_library(package: object) -> None:
    modules = _modules(package)
    assert len(modules) > 3
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FORBIDDEN!r})))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert found == "[]", f"{package.__name__} pulls in {found}"  # type: ignore[attr-defined]
