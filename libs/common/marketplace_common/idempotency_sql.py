"""The idempotency records on SQLAlchemy Core: one table definition, its repository and
the savepoint that turns a unique violation into ``DuplicateKeyError``.

Both services add the same table to their MetaData (``add_idempotency_table``),
so their schemas have the same columns and indexes, and their migrations create
exactly that. The repository runs on whatever executes the service's statements
in the open transaction (``execute``: a connection's or a session's), so it
never opens, commits or ends a transaction itself.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import (
    Column,
    Executable,
    Index,
    Insert,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Select,
    String,
    Table,
    bindparam,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

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

#: Runs one statement with its parameters in the open transaction.
Execute = Callable[[Executable, dict[str, Any]], Awaitable[Any]]


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
def _statements(table: Table) -> tuple[Select[Any], Insert]:
    # Built once per table, so SQLAlchemy's compiled-statement cache keys are memoized.
    get = select(table.c.fingerprint, table.c.response).where(
        table.c.scope == bindparam("scope"), table.c.key == bindparam("key")
    )
    return get, insert(table)


class SqlIdempotencyRepository:
    """``IdempotencyRepository`` on the open transaction; new records get ``now``."""

    def __init__(self, table: Table, execute: Execute, now: datetime) -> None:
        self._get, self._insert = _statements(table)
        self._execute = execute
        self._now = now

    async def get(self, scope: str, key: str) -> StoredResponse | None:
        row = (await self._execute(self._get, {"scope": scope, "key": key})).one_or_none()
        return None if row is None else StoredResponse(row.fingerprint, bytes(row.response))

    async def add(self, scope: str, key: str, record: StoredResponse) -> None:
        values = {
            "scope": scope,
            "key": key,
            "fingerprint": record.fingerprint,
            "response": record.response,
            "created_at": self._now,
        }
        await self._execute(self._insert, values)


def unique_key(exc: IntegrityError, sqlite_names: Mapping[str, str] = _NO_NAMES) -> str | None:
    """The violated unique constraint's name, or None when it is not a unique violation.

    PostgreSQL names the constraint (SQLSTATE 23505). SQLite names the columns
    (``UNIQUE constraint failed: t.a, t.b``): the first ``sqlite_names`` entry
    whose text appears in the message gives the logical name, else the column
    list is the name.
    """
    chain: list[BaseException] = []
    err: BaseException | None = exc.orig
    while err is not None and len(chain) < 4:
        chain.append(err)
        err = err.__cause__
    if any(getattr(e, "sqlstate", None) == "23505" for e in chain):
        names = [getattr(e, "constraint_name", None) for e in chain]
        return next((str(n) for n in names if n), "unique")
    text = str(exc.orig)
    if "UNIQUE constraint failed" in text:
        found = (name for fragment, name in sqlite_names.items() if fragment in text)
        return next(found, text.split(":", 1)[1].strip())
    return None


@asynccontextmanager
async def savepoint(
    owner: AsyncSession | AsyncConnection, sqlite_names: Mapping[str, str] = _NO_NAMES
) -> AsyncIterator[None]:
    """A nested transaction; a unique violation rolls it back and becomes DuplicateKeyError."""
    try:
        async with owner.begin_nested():
            if isinstance(owner, AsyncSession):
                # Statements that run on the session's connection, not the session:
                # procure it here so the SAVEPOINT is emitted before them.
                await owner.connection()
            yield
    except IntegrityError as exc:
        key = unique_key(exc, sqlite_names)
        if key is None:
            raise
        raise DuplicateKeyError(key) from None
