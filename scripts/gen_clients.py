"""Generate the TypeScript clients for proto/ into clients/ts/ (or under another base).

Usage: python scripts/gen_clients.py [BASE_DIR]

buf.gen.yaml runs the local protoc-gen-es that `npm install` put in
node_modules/ (make clients installs it first). Its `out` (clients/ts) is
relative to BASE_DIR, the repository root by default. The output is committed
and never edited by hand; tests/unit/test_generated_clients.py regenerates it
into a temporary directory and fails when the result differs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUF = ROOT / "node_modules" / ".bin" / "buf"
OUT = Path("clients") / "ts"
GENERATED_SUFFIXES = ("_pb.js", "_pb.d.ts")


def generated_files(out_dir: Path) -> list[Path]:
    """The files under out_dir that protoc-gen-es wrote (not the hand-written ones)."""
    return sorted(p for p in out_dir.rglob("*") if p.name.endswith(GENERATED_SUFFIXES))


def generate(base: Path) -> Path:
    """Regenerate base/clients/ts from proto/ and clients/proto/; returns that directory."""
    if not BUF.exists():
        raise SystemExit(f"{BUF.relative_to(ROOT)} is missing: run `npm install` (or make clients)")
    out_dir = base / OUT
    # Files of a removed .proto must not linger; hand-written files stay.
    for stale in generated_files(out_dir):
        stale.unlink()
    subprocess.run(  # noqa: S603 (our own buf, fixed arguments)
        [str(BUF), "generate", "--template", "buf.gen.yaml", "--output", str(base)],
        cwd=ROOT,
        check=True,
    )
    return out_dir


if __name__ == "__main__":
    generate(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT)
