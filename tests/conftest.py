"""Shared fixtures: databases for tests.

PostgreSQL: ``postgres_server_url`` (one server for the session) and
``pg_url`` (a fresh database per test, dropped after). The server is, in
order: ``MARKETPLACE_TEST_PG_URL`` when set; 127.0.0.1:5432 as user
``postgres`` when it answers; else a throwaway cluster started here with the
local PostgreSQL binaries (``initdb``/``pg_ctl`` on PATH or under
``/usr/lib/postgresql/*/bin``; as root they run as the ``postgres`` user).
Without any of these the PostgreSQL tests fail when ``CI`` is set and are
skipped otherwise. Requesting ``pg_url`` or ``postgres_server_url`` marks a
test ``postgres`` (so ``-m "not postgres"`` deselects it).

SQLite: ``sqlite_url`` is a file database in the test's ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from marketplace_common.pg_admin import asyncpg_dsn, throwaway_database

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
PG_URL_ENV = "MARKETPLACE_TEST_PG_URL"
_PG_FIXTURES = frozenset({"pg_url", "postgres_server_url"})


class ClusterUnavailableError(RuntimeError):
    """No local PostgreSQL binaries (or no way to run them) for a throwaway cluster."""


async def _answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(asyncpg_dsn(url), timeout=3.0)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    await conn.close()
    return True


def _find_pg_bindir() -> Path:
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += [Path(p) for p in versions]
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise ClusterUnavailableError("no initdb/pg_ctl on PATH or under /usr/lib/postgresql/*/bin")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(label: str, cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-800:]
        raise ClusterUnavailableError(f"{label} failed ({result.returncode}): {detail}")


@contextmanager
def throwaway_cluster(parent_dir: str | None = None) -> Iterator[str]:
    """Start a private PostgreSQL cluster (trust auth, a free port); yield its URL.

    The cluster lives in a new temporary directory (under ``parent_dir`` or
    the system temp dir) and is stopped and deleted on exit. As root, the
    binaries run as the ``postgres`` user (initdb refuses root), so the
    directory is owned by that user.
    """
    bindir = _find_pg_bindir()
    prefix: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise ClusterUnavailableError("running as root but no 'postgres' user") from exc
        if runuser is None:
            raise ClusterUnavailableError("running as root but no runuser to drop privileges")
        prefix = [runuser, "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="marketplace-pg-", dir=parent_dir))
    try:
        if owner is not None:
            os.chown(base, owner.pw_uid, owner.pw_gid)
        data, log = base / "data", base / "server.log"
        initdb, pg_ctl = str(bindir / "initdb"), str(bindir / "pg_ctl")
        _run("initdb", [*prefix, initdb, "-D", str(data), "-U", "postgres", "--auth=trust",
                        "--encoding=UTF8", "--no-sync"])  # fmt: skip
        port = _free_port()
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        _run("pg_ctl start", [*prefix, pg_ctl, "-D", str(data), "-l", str(log), "-o", options,
                              "-w", "-t", "60", "start"])  # fmt: skip
        try:
            yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
        finally:
            _run("pg_ctl stop", [*prefix, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"])
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster_starter() -> Callable[[str | None], AbstractContextManager[str]]:
    """The throwaway-cluster starter itself, for the test that checks it."""
    return throwaway_cluster


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of a PostgreSQL server (superuser ``postgres``) for the whole session."""
    explicit = os.environ.get(PG_URL_ENV)
    if explicit:
        if not asyncio.run(_answers(explicit)):
            pytest.fail(f"{PG_URL_ENV} is set but the server does not answer", pytrace=False)
        yield explicit
        return
    if asyncio.run(_answers(DEFAULT_PG_URL)):
        yield DEFAULT_PG_URL
        return
    with ExitStack() as stack:
        try:
            url = stack.enter_context(throwaway_cluster())
        except ClusterUnavailableError as exc:
            message = (
                f"PostgreSQL tests need a server: nothing answers on 127.0.0.1:5432 and "
                f"no throwaway cluster could be started ({exc}). Point the suite at a "
                f"server with {PG_URL_ENV}=postgresql+asyncpg://user@host:port/postgres "
                f"(a superuser that may CREATE DATABASE), or install the PostgreSQL "
                f"server binaries."
            )
            pytest.skip(message)  # a failure under CI: see pytest_runtest_makereport
        yield url


@pytest.fixture
async def pg_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A fresh, uniquely named database for one test; dropped (WITH FORCE) after."""
    async with throwaway_database(postgres_server_url, prefix="test") as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file database in the test's temporary directory."""
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Requesting a PostgreSQL fixture is enough to be a ``postgres`` test."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _PG_FIXTURES and item.get_closest_marker("postgres") is None:
            item.add_marker(pytest.mark.postgres)


def postgres_required() -> bool:
    """Under CI (or MARKETPLACE_REQUIRE_PG=1) PostgreSQL tests must run, never skip."""
    return bool(os.environ.get("CI") or os.environ.get("MARKETPLACE_REQUIRE_PG"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A skipped ``postgres`` test fails where PostgreSQL is required.

    Whatever the skip's origin (no server, no cluster binaries, a test's own
    skip), it would hide the locking and race tests, so under CI it is an error.
    """
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and item.get_closest_marker("postgres") and postgres_required():
        report.outcome = "failed"
        report.longrepr = f"PostgreSQL test skipped under CI (not allowed): {report.longrepr}"
