"""The documentation cannot drift from the repository.

* every error reason the code can produce is in docs/errors.md, every reason
  listed there still exists, and each listed code is the one the mapping gives;
* every relative link in README.md and docs/ points at a file (and heading)
  that exists;
* no file names a Markdown document the repository does not hold;
* README.md fits on a few screens, and every test its Guarantees name exists.
"""

from __future__ import annotations

import ast
import importlib
import os
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from marketplace_common import errors, status

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
ERRORS_MD = DOCS / "errors.md"
PACKAGES = ("marketplace_common", "marketplace_bids", "marketplace_execution")
SOURCE_DIRS = (ROOT / "libs" / "common", ROOT / "services")
_SKIP_DIRS = {".git", ".venv", "node_modules", "var", "__pycache__", "build", "dist"}

_REASON = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")  # where strings are not all reasons
_NAMED_REASON = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")  # reason="..."
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_MD_REF = re.compile(r"\b[A-Za-z0-9_-]+\.md\b")


# --- reasons -----------------------------------------------------------------------


def _import_all() -> None:
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if ".migrations" not in info.name:
                importlib.import_module(info.name)


def _subclasses(cls: type[errors.AgentError]) -> Iterator[type[errors.AgentError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _kinds_by_name() -> dict[str, type[errors.AgentError]]:
    _import_all()
    kinds: list[type[errors.AgentError]] = [errors.AgentError, *_subclasses(errors.AgentError)]
    return {cls.__name__: cls for cls in kinds}


def _code_of(cls: type[errors.AgentError]) -> str:
    for base in cls.__mro__:
        code = status.CODE_FOR_KIND.get(base)
        if code is not None:
            return code.name
    return ""


def _callee(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _text(node: ast.expr, pattern: re.Pattern[str]) -> str | None:
    """The node's string value when it is a constant matching ``pattern``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value if pattern.fullmatch(node.value) else None
    return None


def _literal_reasons(tree: ast.AST) -> Iterator[tuple[str, str]]:
    """(reason, error class name or "") for every reason literal in a module.

    A reason literal is an UPPER_SNAKE ``reason="X"`` (a log line's reason is
    prose), an UPPER_SNAKE argument of a call to a ``...Error`` class, or an
    UPPER_SNAKE string in a tuple of a dict's value (a transition table: the
    status needed and the reason naming it).
    """
    for node in ast.walk(tree):
        candidates: list[tuple[str | None, str]] = []
        if isinstance(node, ast.Call):
            callee = _callee(node)
            candidates += [
                (_text(kw.value, _NAMED_REASON), callee)
                for kw in node.keywords
                if kw.arg == "reason"
            ]
            if callee.endswith("Error"):
                candidates += [(_text(arg, _REASON), callee) for arg in node.args]
        elif isinstance(node, ast.Dict):
            tuples = [v for v in node.values if isinstance(v, ast.Tuple)]
            candidates += [(_text(elt, _REASON), "") for t in tuples for elt in t.elts]
        yield from ((reason, callee) for reason, callee in candidates if reason is not None)


def _sources() -> Iterator[Path]:
    for top in SOURCE_DIRS:
        for path in top.rglob("*.py"):
            if "_pb2" not in path.name and "migrations" not in path.parts:
                yield path


def code_reasons() -> dict[str, set[str]]:
    """Every reason the code can produce, with the codes its error classes map to."""
    kinds = _kinds_by_name()
    found: dict[str, set[str]] = {}
    for cls in kinds.values():
        if "default_reason" in vars(cls):
            found.setdefault(cls.default_reason, set()).add(_code_of(cls))
    for path in _sources():
        for reason, callee in _literal_reasons(ast.parse(path.read_text(), str(path))):
            codes = found.setdefault(reason, set())
            if callee in kinds:
                codes.add(_code_of(kinds[callee]))
    return found


def documented_reasons() -> dict[str, str]:
    """reason -> the code column of the Reasons table of docs/errors.md."""
    text = ERRORS_MD.read_text()
    section = text.split("\n## Reasons\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`"):
            for reason in re.findall(r"`([A-Z_0-9]+)`", cells[0]):
                rows[reason] = cells[1]
    return rows


def test_the_scan_finds_reasons_of_every_shape() -> None:
    # default_reason, reason=, a positional reason, a transition table.
    found = code_reasons()
    assert {"BID_NOT_FOUND", "LOCK_TIMEOUT", "BID_NOT_PENDING", "TASK_NOT_PROCESSING"} <= set(found)


def test_every_reason_in_the_code_is_documented() -> None:
    missing = sorted(set(code_reasons()) - set(documented_reasons()))
    assert missing == [], f"add these reasons to docs/errors.md: {missing}"


def test_every_documented_reason_exists_in_the_code() -> None:
    stale = sorted(set(documented_reasons()) - set(code_reasons()))
    assert stale == [], f"docs/errors.md lists reasons the code no longer has: {stale}"


def test_documented_codes_match_the_mapping() -> None:
    documented = documented_reasons()
    wrong = {
        reason: (sorted(codes), documented[reason])
        for reason, codes in code_reasons().items()
        if reason in documented
        and any(code and not documented[reason].startswith(code) for code in codes)
    }
    assert wrong == {}


# --- links -------------------------------------------------------------------------


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#+\s+(.+)$", path.read_text(), flags=re.MULTILINE)
    return {_slug(h) for h in headings}


def _relative_links(path: Path) -> Iterator[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    for target in _LINK.findall(text):
        if not re.match(r"[a-z][a-z0-9+.-]*:", target):
            yield target


@pytest.mark.parametrize("page", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_something_that_exists(page: Path) -> None:
    broken = []
    for target in _relative_links(page):
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        missing_anchor = bool(anchor) and resolved.suffix == ".md"
        if not resolved.exists() or (missing_anchor and anchor not in _anchors(resolved)):
            broken.append(target)
    assert broken == []


# --- references to documents ----------------------------------------------------------


def _repository_files() -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
        for name in filenames:
            yield Path(dirpath) / name


def test_no_file_refers_to_a_document_the_repository_does_not_hold() -> None:
    files = list(_repository_files())
    held = {p.name for p in files if p.suffix == ".md"}
    suffixes = {".py", ".md", ".proto", ".yaml", ".yml"}
    missing = {
        f"{path.relative_to(ROOT)}: {ref}"
        for path in files
        if path.suffix in suffixes
        for ref in _MD_REF.findall(path.read_text(errors="replace"))
        if ref not in held
    }
    assert sorted(missing) == []


# --- README ----------------------------------------------------------------------------


def test_readme_fits_on_a_few_screens() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def test_every_guarantee_names_a_test_that_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Guarantees\n", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", section)
    assert len(named) >= 10
    missing = [
        f"{path}::{name}"
        for path, name in named
        if not (ROOT / path).exists()
        or not re.search(rf"^(async )?def {name}\(", (ROOT / path).read_text(), re.MULTILINE)
    ]
    assert missing == []
