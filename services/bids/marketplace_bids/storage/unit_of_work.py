"""The unit of work: one RPC's repositories on one transaction, via the kit's run_transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import TypeVar

from marketplace_common.db import run_transaction
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from marketplace_bids.domain.ports import Repositories
from marketplace_bids.storage.repositories import (
    SqlBidEventRepository,
    SqlBidRepository,
    SqlDeliveryTokenRepository,
    SqlIdempotencyRepository,
    SqlTaskEventRepository,
    SqlTaskRepository,
    savepoint,
)

T = TypeVar("T")


class SqlRepositories:
    """The repositories of one open transaction (implements domain.ports.Repositories)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self.tasks = SqlTaskRepository(session)
        self.bids = SqlBidRepository(session)
        self.bid_events = SqlBidEventRepository(session)
        self.task_events = SqlTaskEventRepository(session)
        self.idempotency = SqlIdempotencyRepository(session, datetime.now(UTC))
        self.delivery_tokens = SqlDeliveryTokenRepository(session)

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        return savepoint(self._session)


class SqlUnitOfWork:
    """Runs a function on fresh repositories inside one transaction, then commits.

    Serialization failures and deadlocks are retried by the kit's
    run_transaction, then become ABORTED (ConflictError); a lost database
    becomes UNAVAILABLE. On PostgreSQL each write transaction bounds its row
    lock waits with ``SET LOCAL lock_timeout`` (a timeout is ABORTED + RetryInfo).
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        lock_timeout_ms: int = 5000,
        attempts: int = 3,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._lock_timeout = f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}"
        self._attempts = attempts

    async def run(self, fn: Callable[[Repositories], Awaitable[T]], *, write: bool = True) -> T:
        async def work(session: AsyncSession) -> T:
            if write and session.get_bind().dialect.name == "postgresql":
                await session.execute(text(self._lock_timeout))
            return await fn(SqlRepositories(session))

        return await run_transaction(self._sessionmaker, work, write=write, attempts=self._attempts)
