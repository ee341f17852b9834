"""SqlQuotaStore: Complete's per-principal counters in the execution database.

An admission is one transaction: the day's tokens are read, then one
``INSERT ... ON CONFLICT DO UPDATE ... WHERE used + amount <= limit RETURNING
used`` takes a call of the minute (PostgreSQL and SQLite 3.35+ alike): the
conflicting row is locked while the condition is checked, so concurrent calls
on any number of replicas never take more than the limit. A principal's
counters older than two days are deleted when its first call of a minute
creates a new counter.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from marketplace_common.db import run_transaction
from sqlalchemy import Select, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from marketplace_execution.domain.quota import QuotaWindow
from marketplace_execution.storage.tables import QuotaRow

Q = QuotaRow
_KEEP = timedelta(days=2)


class SqlQuotaStore:
    """:class:`~marketplace_execution.domain.quota.QuotaStore` on one engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert

    async def add(
        self, principal: str, window: QuotaWindow, start: datetime, amount: int, limit: int | None
    ) -> bool:
        async def work(session: AsyncConnection) -> bool:
            return await self._add(session, principal, window, start, amount, limit)

        return await run_transaction(self._engine, work)

    async def admit(
        self,
        principal: str,
        tokens: tuple[datetime, int] | None,
        calls: tuple[datetime, int] | None,
    ) -> QuotaWindow | None:
        async def work(session: AsyncConnection) -> QuotaWindow | None:
            if tokens is not None:
                day, limit = tokens
                used = await session.execute(_used(principal, QuotaWindow.TOKENS_PER_DAY, day))
                if (used.scalar_one_or_none() or 0) >= limit:
                    return QuotaWindow.TOKENS_PER_DAY
            if calls is not None:
                minute, limit = calls
                window = QuotaWindow.CALLS_PER_MINUTE
                if not await self._add(session, principal, window, minute, 1, limit):
                    return window
            return None

        return await run_transaction(self._engine, work)

    async def _add(
        self,
        session: AsyncConnection,
        principal: str,
        window: QuotaWindow,
        start: datetime,
        amount: int,
        limit: int | None,
    ) -> bool:
        if limit is not None and amount > limit:
            return False
        insert = self._insert(Q).values(
            principal=principal, kind=window.value, window_start=start, used=amount
        )
        statement = insert.on_conflict_do_update(
            index_elements=[Q.principal, Q.kind, Q.window_start],
            set_={"used": Q.used + amount},
            where=None if limit is None else (Q.used + amount <= limit),
        ).returning(Q.used)
        used = (await session.execute(statement)).scalar_one_or_none()
        if used is None:
            return False
        if used == amount and window is QuotaWindow.CALLS_PER_MINUTE:
            await session.execute(
                delete(Q).where(Q.principal == principal, Q.window_start < start - _KEEP)
            )
        return True

    async def used(self, principal: str, window: QuotaWindow, start: datetime) -> int:
        async def work(session: AsyncConnection) -> int:
            found = (await session.execute(_used(principal, window, start))).scalar_one_or_none()
            return int(found or 0)

        return await run_transaction(self._engine, work, write=False)


def _used(principal: str, window: QuotaWindow, start: datetime) -> Select[Any]:
    return select(Q.used).where(
        Q.principal == principal, Q.kind == window.value, Q.window_start == start
    )
