"""SQLAlchemy Core implementations of the domain's repository Protocols.

Repositories never commit; they run inside the transaction the unit of work
opened, on its connection. Every statement is a kit
:class:`~marketplace_common.db_statements.Statement`, built once (a list's
once per shape of its filters) and compiled once per dialect: on PostgreSQL
it runs on the asyncpg connection itself. Lists are keyset-paginated on
``(created_at, id)``, never OFFSET.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, cast

from marketplace_common.db_statements import Statement
from marketplace_common.errors import ErrorType
from marketplace_common.idempotency_sql import SqlIdempotencyRepository
from marketplace_common.idempotency_sql import savepoint as kit_savepoint
from marketplace_common.paging import PageCursor
from sqlalchemy import (
    ColumnElement,
    Insert,
    Integer,
    Select,
    Table,
    bindparam,
    delete,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

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


def _keyset(created: Any, ident: Any, *, newest_first: bool) -> ColumnElement[bool]:
    """``(created_at, id)`` past the page token's position, as parameters."""
    row = tuple_(created, ident)
    bound = tuple_(
        bindparam("after_created_at", type_=created.type), bindparam("after_id", type_=ident.type)
    )
    return row < bound if newest_first else row > bound


def _after_params(after: PageCursor | None) -> dict[str, Any]:
    return (
        {} if after is None else {"after_created_at": after.created_at, "after_id": str(after.id)}
    )


_LIMIT = bindparam("limit", type_=Integer)


class _Shapes:
    """A list query's statements, one per shape of its filters (which are set, whether
    the page starts after a token), each built and compiled once."""

    def __init__(self, build: Callable[[tuple[bool, ...]], Select[Any]]) -> None:
        self._build = build
        self._statements: dict[tuple[bool, ...], Statement] = {}

    def get(self, shape: tuple[bool, ...]) -> Statement:
        statement = self._statements.get(shape)
        if statement is None:
            statement = self._statements[shape] = Statement(self._build(shape))
        return statement


def _task(row: Any) -> Task:
    return Task(
        task_id=row["task_id"],
        client_email=row["client_email"],
        title=row["title"],
        description=row["description"],
        budget=Money(
            currency_code=row["budget_currency"],
            units=row["budget_units"],
            nanos=row["budget_nanos"],
        ),
        status=TaskStatus(row["status"]),
        bid_id=row["bid_id"],
        agent_id=row["agent_id"],
        execution_id=row["execution_id"],
        result=row["result"],
        error_type=ErrorType(row["error_type"]) if row["error_type"] else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _bid(row: Any) -> Bid:
    return Bid(
        bid_id=row["bid_id"],
        marketplace=row["marketplace"],
        job_id=row["job_id"],
        agent_id=row["agent_id"],
        amount=Money(
            currency_code=row["amount_currency"],
            units=row["amount_units"],
            nanos=row["amount_nanos"],
        ),
        proposal=row["proposal"],
        status=BidStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _event(row: Any) -> BidEvent:
    return BidEvent(
        event_id=row["event_id"],
        bid_id=row["bid_id"],
        previous_status=BidStatus(row["previous_status"]),
        new_status=BidStatus(row["new_status"]),
        reason=row["reason"],
        actor=row["actor"],
        created_at=row["created_at"],
    )


def _task_list_build(shape: tuple[bool, ...]) -> Select[Any]:
    email, status, created_after, created_before, later = shape
    conditions: list[ColumnElement[bool]] = []
    if email:
        conditions.append(TaskRow.client_email == bindparam("client_email"))
    if status:
        conditions.append(TaskRow.status == bindparam("status"))
    if created_after:
        conditions.append(TaskRow.created_at >= bindparam("created_after"))
    if created_before:
        conditions.append(TaskRow.created_at < bindparam("created_before"))
    if later:
        conditions.append(_keyset(TaskRow.created_at, TaskRow.task_id, newest_first=True))
    return (
        select(TaskRow)
        .where(*conditions)
        .order_by(TaskRow.created_at.desc(), TaskRow.task_id.desc())
        .limit(_LIMIT)
    )


_TASK_LISTS = _Shapes(_task_list_build)


def _task_list(
    filters: TaskFilter, after: PageCursor | None, limit: int
) -> tuple[Statement, dict[str, Any]]:
    given = {
        "client_email": filters.client_email,
        "status": filters.status.value if filters.status is not None else None,
        "created_after": filters.created_after,
        "created_before": filters.created_before,
    }
    params = {name: value for name, value in given.items() if value is not None}
    shape = (*(value is not None for value in given.values()), after is not None)
    return _TASK_LISTS.get(shape), {**params, **_after_params(after), "limit": limit}


def task_list_statement(filters: TaskFilter, after: PageCursor | None, limit: int) -> Select[Any]:
    """ListTasks' query with its values: newest first, keyset after ``after`` (EXPLAIN tests)."""
    statement, params = _task_list(filters, after, limit)
    return cast(Select[Any], statement.statement).params(params)


def _bid_list_build(shape: tuple[bool, ...]) -> Select[Any]:
    *present, later = shape
    columns = (BidRow.marketplace, BidRow.job_id, BidRow.agent_id, BidRow.status)
    conditions: list[ColumnElement[bool]] = [
        column == bindparam(column.key) for column, on in zip(columns, present, strict=True) if on
    ]
    if later:
        conditions.append(_keyset(BidRow.created_at, BidRow.bid_id, newest_first=True))
    return (
        select(BidRow)
        .where(*conditions)
        .order_by(BidRow.created_at.desc(), BidRow.bid_id.desc())
        .limit(_LIMIT)
    )


_BID_LISTS = _Shapes(_bid_list_build)


def _bid_list(
    filters: BidFilter, after: PageCursor | None, limit: int
) -> tuple[Statement, dict[str, Any]]:
    given = {
        "marketplace": filters.marketplace,
        "job_id": filters.job_id,
        "agent_id": filters.agent_id,
        "status": filters.status.value if filters.status is not None else None,
    }
    params = {name: value for name, value in given.items() if value is not None}
    shape = (*(value is not None for value in given.values()), after is not None)
    return _BID_LISTS.get(shape), {**params, **_after_params(after), "limit": limit}


def bid_list_statement(filters: BidFilter, after: PageCursor | None, limit: int) -> Select[Any]:
    """ListBids' query with its values: newest first, keyset after ``after``."""
    statement, params = _bid_list(filters, after, limit)
    return cast(Select[Any], statement.statement).params(params)


def _bid_event_list_build(shape: tuple[bool, ...]) -> Select[Any]:
    (later,) = shape
    conditions: list[ColumnElement[bool]] = [BidEventRow.bid_id == bindparam("bid_id")]
    if later:
        conditions.append(_keyset(BidEventRow.created_at, BidEventRow.event_id, newest_first=False))
    return (
        select(BidEventRow)
        .where(*conditions)
        .order_by(BidEventRow.created_at, BidEventRow.event_id)
        .limit(_LIMIT)
    )


_BID_EVENT_LISTS = _Shapes(_bid_event_list_build)


def bid_event_list_statement(bid_id: str, after: PageCursor | None, limit: int) -> Select[Any]:
    """ListBidEvents' query with its values: oldest first, keyset after ``after``."""
    params = {"bid_id": bid_id, **_after_params(after), "limit": limit}
    return cast(Select[Any], _BID_EVENT_LISTS.get((after is not None,)).statement).params(params)


class _Repository:
    """Statements on the transaction's connection (see the module doc)."""

    __slots__ = ("_c",)

    def __init__(self, conn: AsyncConnection) -> None:
        self._c = conn


def _table(row: type[Any]) -> Table:
    table: Table = row.__table__
    return table


def insert_all(table: Table) -> Insert:
    """INSERT of every column of ``table``, each a parameter named after its column."""
    return insert(table).values({column.key: bindparam(column.key) for column in table.columns})


_TASKS, _BIDS = _table(TaskRow), _table(BidRow)
_BID_EVENTS = _table(BidEventRow)
_KEYS, _DELIVERY_TOKENS = _table(IdempotencyRow), _table(DeliveryTokenRow)

_TASK_GET_SELECT = select(TaskRow).where(TaskRow.task_id == bindparam("task_id"))
_TASK_GET = Statement(_TASK_GET_SELECT)
_TASK_GET_LOCKED = Statement(_lock(_TASK_GET_SELECT))
_TASK_ADD = Statement(insert_all(_TASKS))
_TASK_UPDATE = Statement(
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
_BID_GET_SELECT = select(BidRow).where(BidRow.bid_id == bindparam("bid_id"))
_BID_GET = Statement(_BID_GET_SELECT)
_BID_GET_LOCKED = Statement(_lock(_BID_GET_SELECT))
_BID_PENDING = Statement(
    select(BidRow).where(
        BidRow.marketplace == bindparam("marketplace"),
        BidRow.job_id == bindparam("job_id"),
        BidRow.agent_id == bindparam("agent_id"),
        BidRow.status == BidStatus.PENDING.value,
    )
)
_BID_ADD = Statement(insert_all(_BIDS))
_BID_UPDATE = Statement(
    update(_BIDS)
    .where(_BIDS.c.bid_id == bindparam("w_bid_id"))
    .values(status=bindparam("v_status"), updated_at=bindparam("v_updated_at"))
)
_BID_EVENT_ADD = Statement(insert_all(_BID_EVENTS))
_TOKEN_GET = Statement(
    select(DeliveryTokenRow).where(DeliveryTokenRow.token_hash == bindparam("token_hash"))
)
_TOKEN_ADD = Statement(insert_all(_DELIVERY_TOKENS))
_TOKEN_DELETE = Statement(
    delete(_DELIVERY_TOKENS).where(_DELIVERY_TOKENS.c.token_hash == bindparam("token_hash"))
)


class SqlTaskRepository(_Repository):
    async def get(self, task_id: str, *, lock: bool = False) -> Task | None:
        statement = _TASK_GET_LOCKED if lock else _TASK_GET
        row = await statement.fetchrow(self._c, {"task_id": task_id})
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
        await _TASK_ADD.execute(self._c, values)

    async def update(self, task: Task) -> None:
        values = {
            "w_task_id": task.task_id,
            "v_status": task.status.value,
            "v_execution_id": task.execution_id,
            "v_result": task.result,
            "v_error_type": task.error_type.value if task.error_type else None,
            "v_updated_at": task.updated_at,
        }
        await _TASK_UPDATE.execute(self._c, values)

    async def list(self, filters: TaskFilter, after: PageCursor | None, limit: int) -> list[Task]:
        statement, params = _task_list(filters, after, limit)
        return [_task(r) for r in await statement.fetch(self._c, params)]


class SqlBidRepository(_Repository):
    async def get(self, bid_id: str, *, lock: bool = False) -> Bid | None:
        statement = _BID_GET_LOCKED if lock else _BID_GET
        row = await statement.fetchrow(self._c, {"bid_id": bid_id})
        return None if row is None else _bid(row)

    async def find_pending(self, marketplace: str, job_id: str, agent_id: str) -> Bid | None:
        params = {"marketplace": marketplace, "job_id": job_id, "agent_id": agent_id}
        row = await _BID_PENDING.fetchrow(self._c, params)
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
        await _BID_ADD.execute(self._c, values)

    async def update(self, bid: Bid) -> None:
        values = {
            "w_bid_id": bid.bid_id,
            "v_status": bid.status.value,
            "v_updated_at": bid.updated_at,
        }
        await _BID_UPDATE.execute(self._c, values)

    async def list(self, filters: BidFilter, after: PageCursor | None, limit: int) -> list[Bid]:
        statement, params = _bid_list(filters, after, limit)
        return [_bid(r) for r in await statement.fetch(self._c, params)]


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
        await _BID_EVENT_ADD.execute(self._c, values)

    async def list(self, bid_id: str, after: PageCursor | None, limit: int) -> list[BidEvent]:
        statement = _BID_EVENT_LISTS.get((after is not None,))
        params = {"bid_id": bid_id, **_after_params(after), "limit": limit}
        return [_event(r) for r in await statement.fetch(self._c, params)]


def idempotency_records(conn: AsyncConnection, now: datetime) -> SqlIdempotencyRepository:
    """The kit's idempotency records, on the transaction's connection like the others."""
    return SqlIdempotencyRepository(_KEYS, conn, now)


class SqlDeliveryTokenRepository(_Repository):
    async def add(self, token: DeliveryToken) -> None:
        values = {
            "token_hash": token.token_hash,
            "task_id": token.task_id,
            "expires_at": token.expires_at,
            "created_at": token.created_at,
        }
        await _TOKEN_ADD.execute(self._c, values)

    async def get(self, token_hash: str) -> DeliveryToken | None:
        row = await _TOKEN_GET.fetchrow(self._c, {"token_hash": token_hash})
        if row is None:
            return None
        return DeliveryToken(
            token_hash=row["token_hash"],
            task_id=row["task_id"],
            expires_at=row["expires_at"],
            created_at=row["created_at"],
        )

    async def delete(self, token_hash: str) -> bool:
        return bool(await _TOKEN_DELETE.execute(self._c, {"token_hash": token_hash}))


# SQLite names columns, not constraints; bids has one unique rule besides its keys.
_SQLITE_UNIQUE_NAMES = {"bids.marketplace": PENDING_BID_KEY}


def savepoint(conn: AsyncConnection) -> AbstractAsyncContextManager[None]:
    """A nested transaction; a unique violation rolls it back and becomes DuplicateKeyError."""
    return kit_savepoint(conn, _SQLITE_UNIQUE_NAMES)
