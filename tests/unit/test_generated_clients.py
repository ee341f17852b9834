"""The committed TypeScript clients in clients/ts are exactly what proto/ generates."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "node_modules" / ".bin" / "buf"
COMMITTED = ROOT / "clients" / "ts"
VENDORED = ROOT / "clients" / "proto"
HOW_TO_FIX = (
    "TypeScript clients out of date: run `make clients` (or `make proto`) and commit clients/ts"
)


def _generated(base: Path) -> dict[str, bytes]:
    """protoc-gen-es's files under base (the hand-written package.json is not one)."""
    return {
        str(p.relative_to(base)): p.read_bytes()
        for p in base.rglob("*")
        if p.name.endswith(("_pb.js", "_pb.d.ts"))
    }


def test_regenerating_the_typescript_clients_changes_nothing(tmp_path: Path) -> None:
    if not BUF.exists():
        pytest.fail("node_modules/.bin/buf is missing: run `npm install` (make test does)")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_clients.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh, committed = _generated(tmp_path / "clients" / "ts"), _generated(COMMITTED)

    assert sorted(fresh) == sorted(committed), HOW_TO_FIX
    changed = [name for name in sorted(fresh) if fresh[name] != committed[name]]
    assert changed == [], f"{HOW_TO_FIX} ({changed})"


def test_every_proto_has_its_typescript_module() -> None:
    stems = [
        *(
            str(p.relative_to(ROOT / "proto").with_suffix(""))
            for p in ROOT.glob("proto/**/*.proto")
        ),
        *(str(p.relative_to(VENDORED).with_suffix("")) for p in VENDORED.glob("**/*.proto")),
    ]
    assert len(stems) >= 5
    generated = _generated(COMMITTED)
    for stem in stems:
        assert f"{stem}_pb.js" in generated, stem
        assert f"{stem}_pb.d.ts" in generated, stem


@pytest.mark.parametrize("name", ["status.proto", "error_details.proto"])
def test_vendored_google_rpc_protos_match_the_pinned_googleapis_package(name: str) -> None:
    """clients/proto/google/rpc is a copy of googleapis-common-protos (pinned in constraints)."""
    pinned = (resources.files("google.rpc") / name).read_bytes()
    assert (VENDORED / "google" / "rpc" / name).read_bytes() == pinned
