"""The unit of work: one RPC's repositories on one transaction, via the kit's run_transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import TypeVar

from marketplace_common.db import run_transaction
from marketplace_common.rpc_context import current_call
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from marketplace_bids.domain.ports import Repositories
from marketplace_bids.storage.repositories import (
    SqlBidEventRepository,
    SqlBidRepository,
    SqlDeliveryTokenRepository,
    SqlTaskRepository,
    idempotency_records,
    savepoint,
)
from marketplace_bids.storage.task_events import SqlTaskEventRepository

T = TypeVar("T")


class SqlRepositories:
    """The repositories of one open transaction (implements domain.ports.Repositories)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self.tasks = SqlTaskRepository(conn)
        self.bids = SqlBidRepository(conn)
        self.bid_events = SqlBidEventRepository(conn)
        self.task_events = SqlTaskEventRepository(conn)
        self.idempotency = idempotency_records(conn, datetime.now(UTC))
        self.delivery_tokens = SqlDeliveryTokenRepository(conn)

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        return savepoint(self._conn)


class SqlUnitOfWork:
    """Runs a function on fresh repositories inside one transaction, then commits.

    Serialization failures and deadlocks are retried by the kit's
    run_transaction, then become ABORTED (ConflictError); a lost database
    becomes UNAVAILABLE. On PostgreSQL each write transaction bounds its row
    lock waits with a local ``lock_timeout`` (a timeout is ABORTED + RetryInfo),
    and when the RPC being served has a deadline, every transaction gets a
    local ``statement_timeout`` of the time left: a request whose caller gave
    up does not keep a statement (or a lock wait) running in the database
    (the timeout is DEADLINE_EXCEEDED). SQLite waits are bounded by its busy
    timeout.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        lock_timeout_ms: int = 5000,
        attempts: int = 3,
    ) -> None:
        self._engine = engine
        self._lock_timeout_ms = int(lock_timeout_ms)
        self._attempts = attempts

    async def run(self, fn: Callable[[Repositories], Awaitable[T]], *, write: bool = True) -> T:
        async def work(conn: AsyncConnection) -> T:
            return await fn(SqlRepositories(conn))

        def timeouts() -> dict[str, int]:
            # Computed per attempt, so a retried transaction gets only the time still left.
            # SET LOCAL (sent with the BEGIN on PostgreSQL) ends with the transaction.
            statement_ms = deadline_ms()
            found = {} if statement_ms is None else {"statement_timeout": statement_ms}
            if write:
                found["lock_timeout"] = self._lock_timeout_ms
            return found

        return await run_transaction(
            self._engine, work, write=write, attempts=self._attempts, settings=timeouts
        )


def deadline_ms() -> int | None:
    """Milliseconds left before the current RPC's deadline (at least 1), None without one."""
    call = current_call()
    remaining = None if call is None else call.time_remaining()
    if remaining is None:
        return None
    # 0 would mean "no timeout" to PostgreSQL: a spent deadline gets the minimum.
    return max(1, int(remaining * 1000))
