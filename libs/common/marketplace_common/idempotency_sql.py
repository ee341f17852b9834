"""The idempotency records on SQLAlchemy Core: one table definition, its repository and
the savepoint that turns a unique violation into ``DuplicateKeyError``.

Both services add the same table to their MetaData (``add_idempotency_table``),
so their schemas have the same columns and indexes, and their migrations create
exactly that. The repository runs its statements on the open transaction's
connection (as :class:`~marketplace_common.db_statements.Statement` objects:
on PostgreSQL, on the driver connection), so it never opens, commits or ends a
transaction itself.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from types import MappingProxyType

from sqlalchemy import (
    Column,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    bindparam,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from marketplace_common.db_statements import Statement
from marketplace_common.db_statements import savepoint as db_savepoint
from marketplace_common.db_types import UtcDateTime
from marketplace_common.idempotency import DuplicateKeyError, StoredResponse

__all__ = [
    "IDEMPOTENCY_TABLE",
    "SqlIdempotencyRepository",
    "add_idempotency_table",
    "savepoint",
    "unique_key",
]

IDEMPOTENCY_TABLE = "idempotency_keys"
_NO_NAMES: Mapping[str, str] = MappingProxyType({})


def add_idempotency_table(metadata: MetaData) -> Table:
    """Adds ``idempotency_keys`` to ``metadata``: one row per key's first use.

    ``(scope, key)`` is the primary key; ``created_at`` is indexed for
    retention, which deletes the oldest records in batches. Every name is
    given here, so both services' naming conventions produce the same schema.
    """
    return Table(
        IDEMPOTENCY_TABLE,
        metadata,
        Column("scope", String(32), nullable=False),
        Column("key", String(36), nullable=False),
        Column("fingerprint", String(64), nullable=False),
        Column("response", LargeBinary, nullable=False),
        Column("created_at", UtcDateTime(), nullable=False),
        PrimaryKeyConstraint("scope", "key", name="pk_idempotency_keys"),
        Index("ix_idempotency_keys_created_at", "created_at"),
    )


@functools.cache
def _statements(table: Table) -> tuple[Statement, Statement]:
    # Built once per table, and compiled once per dialect.
    get = select(table.c.fingerprint, table.c.response).where(
        table.c.scope == bindparam("scope"), table.c.key == bindparam("key")
    )
    add = insert(table).values({column.key: bindparam(column.key) for column in table.columns})
    return Statement(get), Statement(add)


class SqlIdempotencyRepository:
    """``IdempotencyRepository`` on the open transaction's connection; new records get ``now``."""

    __slots__ = ("_add", "_conn", "_get", "_now")

    def __init__(self, table: Table, conn: AsyncConnection, now: datetime) -> None:
        self._get, self._add = _statements(table)
        self._conn = conn
        self._now = now

    async def get(self, scope: str, key: str) -> StoredResponse | None:
        row = await self._get.fetchrow(self._conn, {"scope": scope, "key": key})
        return None if row is None else StoredResponse(row["fingerprint"], bytes(row["response"]))

    async def add(self, scope: str, key: str, record: StoredResponse) -> None:
        values = {
            "scope": scope,
            "key": key,
            "fingerprint": record.fingerprint,
            "response": record.response,
            "created_at": self._now,
        }
        await self._add.execute(self._conn, values)


def unique_key(exc: BaseException, sqlite_names: Mapping[str, str] = _NO_NAMES) -> str | None:
    """The violated unique constraint's name, or None when ``exc`` is not a unique violation.

    ``exc`` is SQLAlchemy's IntegrityError (a statement run through it) or the
    driver's own error (a statement run on the asyncpg connection). PostgreSQL
    names the constraint (SQLSTATE 23505). SQLite names the columns
    (``UNIQUE constraint failed: t.a, t.b``): the first ``sqlite_names`` entry
    whose text appears in the message gives the logical name, else the column
    list is the name.
    """
    chain: list[BaseException] = []
    err: BaseException | None = exc
    while err is not None and len(chain) < 5:
        chain.append(err)
        err = getattr(err, "orig", None) or err.__cause__
    if any(getattr(e, "sqlstate", None) == "23505" for e in chain):
        names = [getattr(e, "constraint_name", None) for e in chain]
        return next((str(n) for n in names if n), "unique")
    for err in reversed(chain):  # the driver's own error first (SQLAlchemy's adds the SQL)
        text = str(err)
        if text.startswith("UNIQUE constraint failed"):
            found = (name for fragment, name in sqlite_names.items() if fragment in text)
            return next(found, text.split(":", 1)[1].strip())
    return None


@asynccontextmanager
async def savepoint(
    conn: AsyncConnection, sqlite_names: Mapping[str, str] = _NO_NAMES
) -> AsyncIterator[None]:
    """A nested transaction; a unique violation rolls it back and becomes DuplicateKeyError."""
    try:
        async with db_savepoint(conn):
            yield
    except Exception as exc:
        key = unique_key(exc, sqlite_names)
        if key is None:
            raise
        raise DuplicateKeyError(key) from None
