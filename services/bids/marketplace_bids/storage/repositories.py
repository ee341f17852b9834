"""SQLAlchemy implementations of the domain's repository Protocols.

Repositories never commit; they run inside the transaction the unit of work
opened. Lists are keyset-paginated on ``(created_at, id)``, never OFFSET.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

from marketplace_common.errors import ErrorType
from marketplace_common.idempotency_sql import SqlIdempotencyRepository
from marketplace_common.idempotency_sql import savepoint as kit_savepoint
from marketplace_common.paging import PageCursor
from sqlalchemy import (
    ColumnElement,
    Executable,
    Select,
    Table,
    bindparam,
    delete,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from marketplace_bids.domain.models import Bid, BidEvent, DeliveryToken, Task
from marketplace_bids.domain.ports import (
    PENDING_BID_KEY,
    BidFilter,
    TaskFilter,
)
from marketplace_bids.domain.values import BidStatus, Money, TaskStatus
from marketplace_bids.storage.tables import (
    BidEventRow,
    BidRow,
    DeliveryTokenRow,
    IdempotencyRow,
    TaskRow,
)


def _lock(stmt: Select[Any]) -> Select[Any]:
    # FOR NO KEY UPDATE, not FOR UPDATE: a transition changes status columns,
    # never the key, and NO KEY UPDATE still excludes every other transition
    # (it conflicts with itself), while foreign-key checks of rows inserted
    # meanwhile that point at this one (FOR KEY SHARE: a delivery token for the
    # task) need not wait. SQLite ignores it: its write transactions already
    # hold the database's single write lock (BEGIN IMMEDIATE).
    return stmt.with_for_update(key_share=True)


def _after(created: Any, ident: Any, after: PageCursor | None, *, newest_first: bool) -> Any:
    if after is None:
        return None
    row = tuple_(created, ident)
    bound = (after.created_at, str(after.id))
    return row < bound if newest_first else row > bound


def _task(row: Any) -> Task:
    return Task(
        task_id=row.task_id,
        client_email=row.client_email,
        title=row.title,
        description=row.description,
        budget=Money(
            currency_code=row.budget_currency, units=row.budget_units, nanos=row.budget_nanos
        ),
        status=TaskStatus(row.status),
        bid_id=row.bid_id,
        agent_id=row.agent_id,
        execution_id=row.execution_id,
        result=row.result,
        error_type=ErrorType(row.error_type) if row.error_type else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _bid(row: Any) -> Bid:
    return Bid(
        bid_id=row.bid_id,
        marketplace=row.marketplace,
        job_id=row.job_id,
        agent_id=row.agent_id,
        amount=Money(
            currency_code=row.amount_currency, units=row.amount_units, nanos=row.amount_nanos
        ),
        proposal=row.proposal,
        status=BidStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _event(row: Any) -> BidEvent:
    return BidEvent(
        event_id=row.event_id,
        bid_id=row.bid_id,
        previous_status=BidStatus(row.previous_status),
        new_status=BidStatus(row.new_status),
        reason=row.reason,
        actor=row.actor,
        created_at=row.created_at,
    )


def task_list_statement(filters: TaskFilter, after: PageCursor | None, limit: int) -> Select[Any]:
    """ListTasks' query: newest first, keyset after ``after`` (EXPLAIN tests use it too)."""
    conditions: list[ColumnElement[bool]] = []
    if filters.client_email is not None:
        conditions.append(TaskRow.client_email == filters.client_email)
    if filters.status is not None:
        conditions.append(TaskRow.status == filters.status.value)
    if filters.created_after is not None:
        conditions.append(TaskRow.created_at >= filters.created_after)
    if filters.created_before is not None:
        conditions.append(TaskRow.created_at < filters.created_before)
    keyset = _after(TaskRow.created_at, TaskRow.task_id, after, newest_first=True)
    if keyset is not None:
        conditions.append(keyset)
    return (
        select(TaskRow)
        .where(*conditions)
        .order_by(TaskRow.created_at.desc(), TaskRow.task_id.desc())
        .limit(limit)
    )


def bid_list_statement(filters: BidFilter, after: PageCursor | None, limit: int) -> Select[Any]:
    """ListBids' query: newest first, keyset after ``after``."""
    conditions: list[ColumnElement[bool]] = []
    for column, value in (
        (BidRow.marketplace, filters.marketplace),
        (BidRow.job_id, filters.job_id),
        (BidRow.agent_id, filters.agent_id),
        (BidRow.status, filters.status.value if filters.status else None),
    ):
        if value is not None:
            conditions.append(column == value)
    keyset = _after(BidRow.created_at, BidRow.bid_id, after, newest_first=True)
    if keyset is not None:
        conditions.append(keyset)
    return (
        select(BidRow)
        .where(*conditions)
        .order_by(BidRow.created_at.desc(), BidRow.bid_id.desc())
        .limit(limit)
    )


def bid_event_list_statement(bid_id: str, after: PageCursor | None, limit: int) -> Select[Any]:
    """ListBidEvents' query: oldest first, keyset after ``after``."""
    conditions: list[ColumnElement[bool]] = [BidEventRow.bid_id == bid_id]
    keyset = _after(BidEventRow.created_at, BidEventRow.event_id, after, newest_first=False)
    if keyset is not None:
        conditions.append(keyset)
    return (
        select(BidEventRow)
        .where(*conditions)
        .order_by(BidEventRow.created_at, BidEventRow.event_id)
        .limit(limit)
    )


class _Repository:
    """Core statements on the session's connection.

    The hot paths (every transition, PlaceBid) run a handful of fixed
    statements; executing them as Core on the transaction's connection skips
    the ORM's identity map and flush machinery, and the statements below are
    built once, so SQLAlchemy's compiled cache keys are memoized with them.
    """

    def __init__(self, session: AsyncSession) -> None:
        self._s = session
        self._conn: AsyncConnection | None = None

    async def _execute(self, stmt: Executable, params: dict[str, Any] | None = None) -> Any:
        conn = self._conn
        if conn is None:  # one transaction, one connection: ask the session once
            conn = self._conn = await self._s.connection()
        return await conn.execute(stmt, params)


def _table(row: type[Any]) -> Table:
    table: Table = row.__table__
    return table


_TASKS, _BIDS = _table(TaskRow), _table(BidRow)
_BID_EVENTS = _table(BidEventRow)
_KEYS, _DELIVERY_TOKENS = _table(IdempotencyRow), _table(DeliveryTokenRow)

_TASK_GET = select(TaskRow).where(TaskRow.task_id == bindparam("task_id"))
_TASK_GET_LOCKED = _lock(_TASK_GET)
_TASK_UPDATE = (
    update(_TASKS)
    .where(_TASKS.c.task_id == bindparam("w_task_id"))
    .values(
        status=bindparam("v_status"),
        execution_id=bindparam("v_execution_id"),
        result=bindparam("v_result"),
        error_type=bindparam("v_error_type"),
        updated_at=bindparam("v_updated_at"),
    )
)
_BID_GET = select(BidRow).where(BidRow.bid_id == bindparam("bid_id"))
_BID_GET_LOCKED = _lock(_BID_GET)
_BID_PENDING = select(BidRow).where(
    BidRow.marketplace == bindparam("marketplace"),
    BidRow.job_id == bindparam("job_id"),
    BidRow.agent_id == bindparam("agent_id"),
    BidRow.status == BidStatus.PENDING.value,
)
_BID_UPDATE = (
    update(_BIDS)
    .where(_BIDS.c.bid_id == bindparam("w_bid_id"))
    .values(status=bindparam("v_status"), updated_at=bindparam("v_updated_at"))
)
_TOKEN_GET = select(DeliveryTokenRow).where(DeliveryTokenRow.token_hash == bindparam("token_hash"))


class SqlTaskRepository(_Repository):
    async def get(self, task_id: str, *, lock: bool = False) -> Task | None:
        stmt = _TASK_GET_LOCKED if lock else _TASK_GET
        row = (await self._execute(stmt, {"task_id": task_id})).one_or_none()
        return None if row is None else _task(row)

    async def add(self, task: Task) -> None:
        values = {
            "task_id": task.task_id,
            "client_email": task.client_email,
            "title": task.title,
            "description": task.description,
            "budget_currency": task.budget.currency_code,
            "budget_units": task.budget.units,
            "budget_nanos": task.budget.nanos,
            "status": task.status.value,
            "bid_id": task.bid_id,
            "agent_id": task.agent_id,
            "execution_id": task.execution_id,
            "result": task.result,
            "error_type": task.error_type.value if task.error_type else None,
            "created_at": task.created_at,
            "updated_at": task.updated_at,
        }
        await self._execute(insert(_TASKS), values)

    async def update(self, task: Task) -> None:
        values = {
            "w_task_id": task.task_id,
            "v_status": task.status.value,
            "v_execution_id": task.execution_id,
            "v_result": task.result,
            "v_error_type": task.error_type.value if task.error_type else None,
            "v_updated_at": task.updated_at,
        }
        await self._execute(_TASK_UPDATE, values)

    async def list(self, filters: TaskFilter, after: PageCursor | None, limit: int) -> list[Task]:
        stmt = task_list_statement(filters, after, limit)
        return [_task(r) for r in await self._execute(stmt)]


class SqlBidRepository(_Repository):
    async def get(self, bid_id: str, *, lock: bool = False) -> Bid | None:
        stmt = _BID_GET_LOCKED if lock else _BID_GET
        row = (await self._execute(stmt, {"bid_id": bid_id})).one_or_none()
        return None if row is None else _bid(row)

    async def find_pending(self, marketplace: str, job_id: str, agent_id: str) -> Bid | None:
        params = {"marketplace": marketplace, "job_id": job_id, "agent_id": agent_id}
        row = (await self._execute(_BID_PENDING, params)).one_or_none()
        return None if row is None else _bid(row)

    async def add(self, bid: Bid) -> None:
        values = {
            "bid_id": bid.bid_id,
            "marketplace": bid.marketplace,
            "job_id": bid.job_id,
            "agent_id": bid.agent_id,
            "amount_currency": bid.amount.currency_code,
            "amount_units": bid.amount.units,
            "amount_nanos": bid.amount.nanos,
            "proposal": bid.proposal,
            "status": bid.status.value,
            "created_at": bid.created_at,
            "updated_at": bid.updated_at,
        }
        await self._execute(insert(_BIDS), values)

    async def update(self, bid: Bid) -> None:
        values = {
            "w_bid_id": bid.bid_id,
            "v_status": bid.status.value,
            "v_updated_at": bid.updated_at,
        }
        await self._execute(_BID_UPDATE, values)

    async def list(self, filters: BidFilter, after: PageCursor | None, limit: int) -> list[Bid]:
        stmt = bid_list_statement(filters, after, limit)
        return [_bid(r) for r in await self._execute(stmt)]


class SqlBidEventRepository(_Repository):
    async def add(self, event: BidEvent) -> None:
        values = {
            "event_id": event.event_id,
            "bid_id": event.bid_id,
            "previous_status": event.previous_status.value,
            "new_status": event.new_status.value,
            "reason": event.reason,
            "actor": event.actor,
            "created_at": event.created_at,
        }
        await self._execute(insert(_BID_EVENTS), values)

    async def list(self, bid_id: str, after: PageCursor | None, limit: int) -> list[BidEvent]:
        stmt = bid_event_list_statement(bid_id, after, limit)
        return [_event(r) for r in await self._execute(stmt)]


def idempotency_records(session: AsyncSession, now: datetime) -> SqlIdempotencyRepository:
    """The kit's idempotency records, on the transaction's connection like the others."""
    return SqlIdempotencyRepository(_KEYS, _Repository(session)._execute, now)


class SqlDeliveryTokenRepository(_Repository):
    async def add(self, token: DeliveryToken) -> None:
        values = {
            "token_hash": token.token_hash,
            "task_id": token.task_id,
            "expires_at": token.expires_at,
            "created_at": token.created_at,
        }
        await self._execute(insert(_DELIVERY_TOKENS), values)

    async def get(self, token_hash: str) -> DeliveryToken | None:
        row = (await self._execute(_TOKEN_GET, {"token_hash": token_hash})).one_or_none()
        if row is None:
            return None
        return DeliveryToken(
            token_hash=row.token_hash,
            task_id=row.task_id,
            expires_at=row.expires_at,
            created_at=row.created_at,
        )

    async def delete(self, token_hash: str) -> bool:
        stmt = delete(_DELIVERY_TOKENS).where(_DELIVERY_TOKENS.c.token_hash == token_hash)
        return bool((await self._execute(stmt)).rowcount)


# SQLite names columns, not constraints; bids has one unique rule besides its keys.
_SQLITE_UNIQUE_NAMES = {"bids.marketplace": PENDING_BID_KEY}


def savepoint(session: AsyncSession) -> AbstractAsyncContextManager[None]:
    """A nested transaction; a unique violation rolls it back and becomes DuplicateKeyError."""
    return kit_savepoint(session, _SQLITE_UNIQUE_NAMES)
