"""SqlExecutionStore: the ExecutionStore Protocol on SQLAlchemy (PostgreSQL or SQLite).

Every method is one transaction (``run_transaction``: conflicts retried, outages
mapped to UnavailableError), except that the worker writes of concurrent runs
share transactions (``storage.fenced_writes``). Worker writes are *fenced*: each
names the lease owner and the epoch of the run's claim, so a run whose
execution was claimed again since (by another pool, or by its own after a
heartbeat that failed for a whole lease), or was cancelled, changes nothing and
gets LeaseLostError. Every claim increments ``lease_epoch``.

Claiming: on PostgreSQL ``SELECT ... FOR UPDATE SKIP LOCKED`` picks rows no other
replica is claiming right now, and the lease is set in the same transaction. On
SQLite the write transaction starts with ``BEGIN IMMEDIATE`` (the kit's
write_transaction), which holds the database's single write lock from the first
statement, so the same select-then-update cannot interleave with another
claimer; the UPDATE repeats the "lease expired" condition anyway.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from marketplace_common.db import run_statement, run_transaction
from marketplace_common.errors import ErrorType
from marketplace_common.idempotency import IdempotencyKey
from marketplace_common.idempotency_sql import SqlIdempotencyRepository, savepoint
from marketplace_common.paging import PageCursor
from sqlalchemy import Select, and_, func, insert, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.expression import Executable

from marketplace_execution.domain.access import OwnerScope
from marketplace_execution.domain.errors import (
    ExecutionAlreadyActiveError,
    ExecutionNotActiveError,
    ExecutionNotFoundError,
    LeaseLostError,
)
from marketplace_execution.domain.models import (
    ACTIVE_STATUSES,
    CANCELLED_MESSAGE,
    AttemptView,
    Execution,
    ExecutionStatus,
    NewExecution,
    Outcome,
)
from marketplace_execution.domain.ports import Claimed, Lease, LeaseRenewal, QueueStats
from marketplace_execution.domain.requests import submit_key
from marketplace_execution.storage.convert import attempt_row, execution_view, new_values
from marketplace_execution.storage.fenced_writes import FencedWriter, lock_in_order
from marketplace_execution.storage.tables import IDEMPOTENCY_KEYS, AttemptRow, ExecutionRow

_ACTIVE = tuple(s.value for s in ACTIVE_STATUSES)
E = ExecutionRow


_EXECUTION_COLUMNS = tuple(ExecutionRow.__table__.columns)


_ATTEMPT_COLUMNS = tuple(AttemptRow.__table__.columns)
_INSERT = insert(ExecutionRow.metadata.tables["executions"]).returning(*_EXECUTION_COLUMNS)


async def _load(session: AsyncConnection, execution_id: uuid.UUID) -> Execution:
    # Core rows, not ORM entities: a fraction of the CPU per read, and no
    # identity map to refresh (the loop runs thousands of these).
    row = (
        await session.execute(select(*_EXECUTION_COLUMNS).where(E.execution_id == execution_id))
    ).first()
    if row is None:
        raise ExecutionNotFoundError(execution_id)
    return await _with_attempts(session, row)


def _view(row: Any) -> Execution:
    """The execution of a Core row, without its attempts."""
    return execution_view(row)


async def _with_attempts(session: AsyncConnection, row: Any) -> Execution:
    attempts: list[Any] = list(
        await session.execute(
            select(*_ATTEMPT_COLUMNS)
            .where(AttemptRow.execution_id == row.execution_id)
            .order_by(AttemptRow.number)
        )
    )
    return execution_view(row, attempts)


def list_statement(
    task_id: uuid.UUID | None,
    status: ExecutionStatus | None,
    after: PageCursor | None,
    limit: int,
    owner: OwnerScope | None = None,
) -> Select[Any]:
    """ListExecutions' query: newest first, keyset after ``after``, filtered in SQL.

    ``owner`` is one equality on one owner column, served by its
    ``(column, created_at, execution_id)`` index.
    """
    query = (
        select(*_EXECUTION_COLUMNS)
        .order_by(E.created_at.desc(), E.execution_id.desc())
        .limit(limit)
    )
    if owner is not None:
        if owner.client_email is not None:
            query = query.where(E.client_email == owner.client_email)
        elif owner.agent_id is not None:
            query = query.where(E.agent_id == owner.agent_id)
        else:
            query = query.where(E.submitted_by == owner.submitted_by)
    if task_id is not None:
        query = query.where(E.task_id == task_id)
    if status is not None:
        query = query.where(E.status == status.value)
    if after is not None:
        query = query.where(
            or_(
                E.created_at < after.created_at,
                and_(E.created_at == after.created_at, E.execution_id < after.id),
            )
        )
    return query


class _Keyed:
    """The kit's idempotency records and savepoint on one transaction's connection."""

    def __init__(self, conn: AsyncConnection, now: datetime) -> None:
        self._conn = conn
        self.idempotency = SqlIdempotencyRepository(IDEMPOTENCY_KEYS, conn, now)

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        return savepoint(self._conn)


class SqlExecutionStore:
    """ExecutionStore on one engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._writes = FencedWriter(engine, self._fenced_one)

    # --- reads ----------------------------------------------------------

    async def get(self, execution_id: uuid.UUID) -> Execution:
        return await run_transaction(self._engine, lambda s: _load(s, execution_id), write=False)

    async def replay(self, key: IdempotencyKey[uuid.UUID]) -> Execution | None:
        async def fn(conn: AsyncConnection) -> Execution | None:
            execution_id = await key.replay(_Keyed(conn, datetime.now(UTC)))
            return None if execution_id is None else await _load(conn, execution_id)

        return await run_transaction(self._engine, fn, write=False)

    async def list_page(
        self,
        *,
        task_id: uuid.UUID | None,
        status: ExecutionStatus | None,
        after: PageCursor | None,
        limit: int,
        owner: OwnerScope | None = None,
    ) -> Sequence[Execution]:
        query = list_statement(task_id, status, after, limit, owner)

        async def fn(session: AsyncConnection) -> list[Execution]:
            rows = list(await session.execute(query))
            ids = [r.execution_id for r in rows]
            attempts: dict[uuid.UUID, list[Any]] = {i: [] for i in ids}
            if ids:
                found = await session.execute(
                    select(*_ATTEMPT_COLUMNS)
                    .where(AttemptRow.execution_id.in_(ids))
                    .order_by(AttemptRow.execution_id, AttemptRow.number)
                )
                for attempt in found:
                    attempts[attempt.execution_id].append(attempt)
            return [execution_view(r, attempts[r.execution_id]) for r in rows]

        return await run_transaction(self._engine, fn, write=False)

    # --- client writes --------------------------------------------------

    async def create(self, new: NewExecution) -> Execution:
        key = submit_key(new.request_id, new.request_fingerprint)

        async def fn(conn: AsyncConnection) -> Execution:
            inserted: list[Any] = []

            async def write() -> None:
                inserted.append((await conn.execute(_INSERT, new_values(new))).one())

            # A unique violation (the key, request_id, or the task's active execution)
            # rolls the savepoint back; a twin's key answers, else the task is busy.
            execution_id, created = await key.write_once(
                _Keyed(conn, new.created_at),
                new.execution_id,
                write,
                refusal=lambda _dup: ExecutionAlreadyActiveError(new.task_id),
            )
            if created:  # the row as stored, from the INSERT; no attempts yet
                return execution_view(inserted[0])
            return await _load(conn, execution_id)

        return await run_transaction(self._engine, fn)

    async def request_cancel(self, execution_id: uuid.UUID, now: datetime) -> Execution:
        async def fn(session: AsyncConnection) -> Execution:
            found = await session.execute(
                select(*_EXECUTION_COLUMNS).where(E.execution_id == execution_id).with_for_update()
            )
            row = found.first()
            if row is None:
                raise ExecutionNotFoundError(execution_id)
            if row.pending_outcome == ExecutionStatus.CANCELLED.value:
                return await _load(session, execution_id)
            if row.status not in _ACTIVE or row.pending_outcome is not None:
                raise ExecutionNotActiveError(execution_id, row.pending_outcome or row.status)
            await session.execute(
                update(E)
                .where(E.execution_id == execution_id)
                .values(
                    pending_outcome=ExecutionStatus.CANCELLED.value,
                    cancel_requested=True,
                    error_type=ErrorType.PERMANENT.value,
                    error_message=CANCELLED_MESSAGE,
                    error_reason="CANCELLED",
                    updated_at=now,
                )
            )
            return await _load(session, execution_id)

        return await run_transaction(self._engine, fn)

    # --- worker writes --------------------------------------------------

    async def claim(
        self,
        owner: str,
        limit: int,
        now: datetime,
        lease_seconds: float,
        *,
        skip: Collection[uuid.UUID] = (),
    ) -> Claimed:
        claimable = and_(E.status.in_(_ACTIVE), E.lease_expires_at < now)
        if skip:
            # The pool's own runs (their lease lapsed while the heartbeat failed):
            # never a second run of them in the same pool.
            claimable = and_(claimable, E.execution_id.not_in(list(skip)))

        lease = {
            "lease_owner": owner,
            "lease_epoch": E.lease_epoch + 1,
            "lease_expires_at": now + timedelta(seconds=lease_seconds),
            "heartbeat_at": now,
        }
        if self._postgres:
            # One statement: pick (SKIP LOCKED) and lease in a CTE, the rows come back
            # whole with the owner each had; then the attempts of the resumed ones.
            picked = (
                select(E.execution_id, E.lease_owner)
                .where(claimable)
                .order_by(E.lease_expires_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
                .cte("picked")
            )
            statement = (
                update(E)
                .where(E.execution_id == picked.c.execution_id, claimable)
                .values(**lease)
                .returning(*_EXECUTION_COLUMNS, picked.c.lease_owner.label("previous_owner"))
                .execution_options(synchronize_session=False)
            )
            rows = await run_statement(self._engine, statement)
            return await self._claimed(owner, rows)

        async def fn(session: AsyncConnection) -> Claimed:
            rows = list(
                await session.execute(
                    select(E.execution_id, E.lease_owner)
                    .where(claimable)
                    .order_by(E.lease_expires_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            )
            if not rows:
                return Claimed()
            previous = {row.execution_id: row.lease_owner for row in rows}
            claimed = list(
                await session.execute(
                    update(E)
                    .where(E.execution_id.in_(list(previous)), claimable)
                    .values(**lease)
                    .returning(*_EXECUTION_COLUMNS)
                    .execution_options(synchronize_session=False)
                )
            )
            resumed = [r for r in claimed if r.status != ExecutionStatus.QUEUED.value]
            attempts = await _attempts_of(session, resumed)
            order = {execution_id: i for i, execution_id in enumerate(previous)}
            claimed.sort(key=lambda r: order[r.execution_id])
            return _claimed(owner, claimed, previous, attempts)

        return await run_transaction(self._engine, fn)

    async def _claimed(self, owner: str, rows: Sequence[Any]) -> Claimed:
        """A PostgreSQL claim's answer: the attempts of the resumed executions read in
        one more statement (a QUEUED execution has none: its status turns RUNNING
        before its first attempt, and never goes back)."""
        if not rows:
            return Claimed()
        resumed = [r.execution_id for r in rows if r.status != ExecutionStatus.QUEUED.value]
        attempts: dict[uuid.UUID, list[Any]] = {}
        if resumed:
            found = await run_statement(
                self._engine,
                select(*_ATTEMPT_COLUMNS)
                .where(AttemptRow.execution_id.in_(resumed))
                .order_by(AttemptRow.execution_id, AttemptRow.number),
            )
            for attempt in found:
                attempts.setdefault(attempt.execution_id, []).append(attempt)
        previous = {r.execution_id: r.previous_owner for r in rows}
        return _claimed(owner, rows, previous, attempts)

    async def queue_stats(self, now: datetime) -> QueueStats:
        claimable = and_(E.status.in_(_ACTIVE), E.lease_expires_at < now)

        async def fn(session: AsyncConnection) -> QueueStats:
            row = (
                await session.execute(
                    select(func.count(), func.min(E.lease_expires_at)).where(claimable)
                )
            ).one()
            return QueueStats(depth=int(row[0]), oldest_waiting_since=row[1])

        return await run_transaction(self._engine, fn)

    async def renew(
        self, owner: str, epochs: Mapping[uuid.UUID, int], now: datetime, lease_seconds: float
    ) -> LeaseRenewal:
        # Fenced like every worker write: the owner and the epoch of each run's claim,
        # so an execution claimed again since is neither renewed nor reported held.
        # One IN list per epoch (most runs hold their execution's first claim).
        by_epoch: dict[int, list[uuid.UUID]] = {}
        for execution_id, epoch in epochs.items():
            by_epoch.setdefault(epoch, []).append(execution_id)
        mine = and_(
            E.lease_owner == owner,
            or_(*(and_(E.lease_epoch == e, E.execution_id.in_(i)) for e, i in by_epoch.items())),
        )

        async def fn(session: AsyncConnection) -> LeaseRenewal:
            await lock_in_order(session, list(epochs))
            await session.execute(
                update(E)
                .where(mine)
                .values(lease_expires_at=now + timedelta(seconds=lease_seconds), heartbeat_at=now)
                .execution_options(synchronize_session=False)
            )
            held = (
                await session.execute(select(E.execution_id, E.cancel_requested).where(mine))
            ).all()
            return LeaseRenewal(
                held=frozenset(r[0] for r in held),
                cancel_requested=frozenset(r[0] for r in held if r[1]),
            )

        if not epochs:
            return LeaseRenewal(frozenset(), frozenset())
        return await run_transaction(self._engine, fn)

    async def release(self, execution_id: uuid.UUID, lease: Lease) -> None:
        async def fn(session: AsyncConnection) -> None:
            await session.execute(
                update(E)
                .where(*_held(execution_id, lease))
                .values(lease_owner=None, lease_expires_at=E.created_at)
                .execution_options(synchronize_session=False)
            )

        await run_transaction(self._engine, fn)

    async def _fenced(
        self,
        execution_id: uuid.UUID,
        lease: Lease,
        values: Mapping[str, object],
        *,
        deciding: bool = True,
        attempt: AttemptView | None = None,
        attempts: Sequence[AttemptView] | None = None,
    ) -> Execution:
        """A fenced write (``values``, plus ``attempt`` stored) or LeaseLostError.

        With ``attempts`` (the run's own, under its lease) the execution is
        returned with them and the new ``attempt``, without reading them again.
        Written alone when no other write waits (``_fenced_one``), else in one
        transaction with the writes of other runs (``storage.fenced_writes``).
        """
        return await self._writes.write(
            execution_id, lease, values, deciding=deciding, attempt=attempt, attempts=attempts
        )

    async def _fenced_one(
        self,
        execution_id: uuid.UUID,
        lease: Lease,
        values: Mapping[str, object],
        *,
        deciding: bool = True,
        attempt: AttemptView | None = None,
        attempts: Sequence[AttemptView] | None = None,
    ) -> Execution:
        """One fenced UPDATE (plus an attempt row) or LeaseLostError."""
        fence = [*_held(execution_id, lease), E.status.in_(_ACTIVE)]
        fence.append(E.pending_outcome.is_(None) if deciding else E.pending_outcome.is_not(None))
        if attempts is not None and self._postgres:
            # One statement, one round trip (no BEGIN/COMMIT): the fenced UPDATE,
            # and the attempt inserted by a data-modifying CTE of the same statement.
            rows = await run_statement(
                self._engine, _fenced_statement(fence, values, execution_id, attempt)
            )
            row = rows[0] if rows else None
            if row is None:
                raise LeaseLostError(execution_id, f"{lease.owner} (epoch {lease.epoch})")
            known = list(attempts)
            if attempt is not None and all(a.number != attempt.number for a in known):
                known.append(attempt)
            return dataclasses.replace(_view(row), attempts=tuple(known))

        async def fn(session: AsyncConnection) -> Execution:
            # RETURNING: the updated row comes back with the UPDATE (one statement
            # fewer per worker write; SQLite >= 3.35 and PostgreSQL both have it).
            row = (
                await session.execute(
                    update(E)
                    .where(*fence)
                    .values(**values)
                    .returning(*_EXECUTION_COLUMNS)
                    .execution_options(synchronize_session=False)
                )
            ).first()
            if row is None:
                raise LeaseLostError(execution_id, f"{lease.owner} (epoch {lease.epoch})")
            if attempt is not None:
                await _insert_attempt_once(session, execution_id, attempt)
            if attempts is None:
                return await _with_attempts(session, row)
            known = list(attempts)
            if attempt is not None and all(a.number != attempt.number for a in known):
                known.append(attempt)
            return dataclasses.replace(_view(row), attempts=tuple(known))

        return await run_transaction(self._engine, fn)

    async def set_status(
        self,
        execution_id: uuid.UUID,
        lease: Lease,
        status: ExecutionStatus,
        now: datetime,
        *,
        attempts: Sequence[AttemptView] | None = None,
    ) -> Execution:
        values = {"status": status.value, "updated_at": now}
        return await self._fenced(execution_id, lease, values, attempts=attempts)

    async def add_attempt(
        self,
        execution_id: uuid.UUID,
        lease: Lease,
        attempt: AttemptView,
        status: ExecutionStatus,
        now: datetime,
        *,
        attempts: Sequence[AttemptView] | None = None,
    ) -> Execution:
        values = {"status": status.value, "updated_at": now}
        return await self._fenced(execution_id, lease, values, attempt=attempt, attempts=attempts)

    async def decide(
        self,
        execution_id: uuid.UUID,
        lease: Lease,
        outcome: Outcome,
        now: datetime,
        *,
        attempts: Sequence[AttemptView] | None = None,
    ) -> Execution:
        values = _outcome_values(outcome, now)
        return await self._fenced(execution_id, lease, values, attempts=attempts)

    async def revise(
        self,
        execution_id: uuid.UUID,
        lease: Lease,
        outcome: Outcome,
        now: datetime,
        *,
        attempts: Sequence[AttemptView] | None = None,
    ) -> Execution:
        values = _outcome_values(outcome, now)
        return await self._fenced(execution_id, lease, values, deciding=False, attempts=attempts)

    async def finish(
        self,
        execution_id: uuid.UUID,
        lease: Lease,
        now: datetime,
        *,
        attempts: Sequence[AttemptView] | None = None,
    ) -> Execution:
        values = {
            "status": E.pending_outcome,
            "lease_owner": None,
            "lease_expires_at": now,
            "updated_at": now,
        }
        return await self._fenced(execution_id, lease, values, deciding=False, attempts=attempts)


def _fenced_statement(
    fence: Sequence[Any],
    values: Mapping[str, object],
    execution_id: uuid.UUID,
    attempt: AttemptView | None,
) -> Executable:
    """PostgreSQL: the fenced UPDATE ... RETURNING the row, with ``attempt`` inserted
    (once per number) in the same statement when given; no row when the fence fails."""
    updated = (
        update(E)
        .where(*fence)
        .values(**values)
        .returning(*_EXECUTION_COLUMNS)
        .execution_options(synchronize_session=False)
    )
    if attempt is None:
        return updated
    fenced = updated.cte("fenced")
    row = attempt_row(execution_id, attempt)
    columns = [c for c in AttemptRow.__table__.columns if c.key != "id"]
    inserted = (
        pg_insert(AttemptRow)
        .from_select(
            [c.key for c in columns],
            select(*(literal(getattr(row, c.key), type_=c.type) for c in columns)).select_from(
                fenced
            ),
        )
        .on_conflict_do_nothing(index_elements=["execution_id", "number"])
        .cte("attempt")
    )
    return select(*(fenced.c[c.key] for c in _EXECUTION_COLUMNS)).add_cte(inserted)


async def _attempts_of(session: AsyncConnection, rows: Sequence[Any]) -> dict[uuid.UUID, list[Any]]:
    """The attempts of the executions of ``rows``, by execution, in order."""
    attempts: dict[uuid.UUID, list[Any]] = {}
    if rows:
        found = await session.execute(
            select(*_ATTEMPT_COLUMNS)
            .where(AttemptRow.execution_id.in_([r.execution_id for r in rows]))
            .order_by(AttemptRow.execution_id, AttemptRow.number)
        )
        for attempt in found:
            attempts.setdefault(attempt.execution_id, []).append(attempt)
    return attempts


def _claimed(
    owner: str,
    rows: Sequence[Any],
    previous: Mapping[uuid.UUID, str | None],
    attempts: Mapping[uuid.UUID, Sequence[Any]],
) -> Claimed:
    """What a claim took: ``rows`` (leased now, in claim order), the owner each had."""
    ids = [r.execution_id for r in rows]
    # A lease that expired in another worker's hands (a release clears the owner).
    taken_over = sum(1 for i in ids if previous[i] not in (None, owner))
    return Claimed(
        ids,
        taken_over,
        {r.execution_id: r.lease_epoch for r in rows},
        {r.execution_id: execution_view(r, attempts.get(r.execution_id, ())) for r in rows},
    )


def _held(execution_id: uuid.UUID, lease: Lease) -> tuple[Any, ...]:
    """The row of ``execution_id`` while ``lease`` (owner and epoch) is its latest claim."""
    return (
        E.execution_id == execution_id,
        E.lease_owner == lease.owner,
        E.lease_epoch == lease.epoch,
    )


async def _insert_attempt_once(
    session: AsyncConnection, execution_id: uuid.UUID, attempt: AttemptView
) -> None:
    """Stores the attempt unless its number is stored already.

    A worker retries a write whose commit it could not confirm (a lost
    connection, ``domain.store_retry``); the attempt it wrote then is this one.
    """
    row = attempt_row(execution_id, attempt)
    values = {c.key: getattr(row, c.key) for c in AttemptRow.__table__.columns if c.key != "id"}
    insert = pg_insert if session.dialect.name == "postgresql" else sqlite_insert
    statement = insert(AttemptRow).values(**values)
    await session.execute(
        statement.on_conflict_do_nothing(index_elements=["execution_id", "number"])
    )


def _outcome_values(outcome: Outcome, now: datetime) -> dict[str, object]:
    return {
        "pending_outcome": outcome.status.value,
        "result": outcome.result,
        "error_type": None if outcome.error_type is None else outcome.error_type.value,
        "error_message": outcome.error_message,
        "error_reason": outcome.error_reason,
        "updated_at": now,
    }
