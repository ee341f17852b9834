"""Did a call change any table? A ledger of two services' databases, for robustness tests.

After every call one cheap marker query per database says whether anything
may have been committed (SQLite ``PRAGMA data_version``, PostgreSQL's next
transaction id); only when a marker moved are the tables digested (row count
and an order-independent hash of the rows, per table) and, for a call that
may not change anything, compared with the last state.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

SETTLE_TIMEOUT = 10.0


def libpq_dsn(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as a plain libpq DSN for asyncpg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Probe(Protocol):
    """One service's database as the test sees it (its own connection)."""

    async def marker(self) -> object:
        """Changes whenever a commit may have changed data (a cheap query)."""

    async def digest(self) -> dict[str, tuple[int, str]]:
        """Every table: (row count, order-independent SHA-256 of its rows)."""

    async def active_executions(self) -> int:
        """Executions a worker may still change (0 on a database without them)."""

    async def close(self) -> None: ...


def _rows_digest(rows: list[tuple[Any, ...]]) -> tuple[int, str]:
    hashes = sorted(hashlib.sha256(repr(row).encode()).hexdigest() for row in rows)
    return len(rows), hashlib.sha256("".join(hashes).encode()).hexdigest()


# A decided outcome not yet reported keeps the status active (the outbox).
_ACTIVE_SQL = (
    "SELECT count(*) FROM executions WHERE status IN ('QUEUED', 'RUNNING', 'RETRY_SCHEDULED')"
)


class SqliteProbe:
    """PRAGMA data_version changes when another connection commits to the file."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        names = self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        self._tables = sorted(str(n) for (n,) in names if not str(n).startswith("sqlite_"))

    async def marker(self) -> object:
        return self._db.execute("PRAGMA data_version").fetchone()

    async def digest(self) -> dict[str, tuple[int, str]]:
        self._db.execute("BEGIN")
        try:
            return {t: _rows_digest(self._db.execute(f'SELECT * FROM "{t}"').fetchall())
                    for t in self._tables}  # fmt: skip
        finally:
            self._db.execute("COMMIT")

    async def active_executions(self) -> int:
        if "executions" not in self._tables:
            return 0
        return int(self._db.execute(_ACTIVE_SQL).fetchone()[0])

    async def close(self) -> None:
        self._db.close()


class PostgresProbe:
    """The cluster's next transaction id moves on every commit that wrote (in any
    database: other tests' commits only cost a needless digest)."""

    def __init__(self, conn: Any, tables: list[str]) -> None:
        self._conn = conn
        self._tables = tables
        parts = [
            f"SELECT '{t}', count(*), coalesce(md5(string_agg(md5(r::text), '' "
            f"ORDER BY md5(r::text))), '') FROM \"{t}\" r"
            for t in tables
        ]
        self._digest_sql = " UNION ALL ".join(parts)

    @classmethod
    async def open(cls, url: str) -> PostgresProbe:
        conn = await asyncpg.connect(libpq_dsn(url))
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
        return cls(conn, sorted(r[0] for r in rows))

    async def marker(self) -> object:
        return await self._conn.fetchval("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")

    async def digest(self) -> dict[str, tuple[int, str]]:
        async with self._conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await self._conn.fetch(self._digest_sql)
        return {r[0]: (int(r[1]), str(r[2])) for r in rows}

    async def active_executions(self) -> int:
        if "executions" not in self._tables:
            return 0
        return int(await self._conn.fetchval(_ACTIVE_SQL))

    async def close(self) -> None:
        await self._conn.close()


async def open_probe(url: str) -> Probe:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return SqliteProbe(str(parsed.database))
    return await PostgresProbe.open(url)


@dataclass
class Ledger:
    """What both databases held after the last call allowed to change them.

    After every call the markers are read (one cheap query per database); only
    when one moved are the tables digested and, for a call that may not change
    anything, compared with the last state.
    """

    probes: list[Probe]
    markers: list[object] = field(default_factory=list)
    state: list[dict[str, tuple[int, str]]] = field(default_factory=list)
    digests: int = 0
    unchanged: int = 0  # calls checked to have changed nothing

    async def rebase(self) -> None:
        """Wait for the workers to go idle, then take the current state as the baseline."""
        await self._settle()
        self.markers = [await p.marker() for p in self.probes]
        self.state = [await p.digest() for p in self.probes]
        self.digests += 1

    async def _settle(self) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while sum([await p.active_executions() for p in self.probes]):
            assert time.monotonic() < deadline, "an execution is still running"
            await asyncio.sleep(0.05)

    async def after(self, where: str, may_change: bool) -> None:
        self.unchanged += not may_change
        markers = [await p.marker() for p in self.probes]
        if markers == self.markers:
            return
        if may_change:
            await self.rebase()
            return
        state = [await p.digest() for p in self.probes]
        self.digests += 1
        changed = {
            table: (before[table], after.get(table))
            for before, after in zip(self.state, state, strict=True)
            for table in before
            if before[table] != after.get(table)
        }
        assert not changed, f"{where} changed tables (count, digest) before -> after: {changed}"
        self.markers, self.state = markers, state
