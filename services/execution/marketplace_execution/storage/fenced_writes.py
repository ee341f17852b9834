"""Worker writes grouped into shared transactions (group commit), each still fenced alone.

A worker pool runs hundreds of executions at once, and each writes its
execution several times (status, attempt, outcome, finish). One transaction per
write made those writes the bottleneck of paced work: on SQLite they queue for
the single write lock one by one, and on PostgreSQL each takes a pooled
connection, a BEGIN and a COMMIT. Here the writes that arrive while a batch is
being written wait together and go in the next batch: one transaction, one
fence SELECT, one UPDATE per kind of write for all of them, one INSERT for their
attempts and one SELECT of the rows written. An idle store writes a single write at
once, through the store's own single write (``FencedWriter(write_one=...)``);
under load a batch carries everything that queued meanwhile (at most
``MAX_BATCH``), so nothing waits longer than about one batch. A write given
the run's attempts gets them back (plus the one it stores) without a read.

Every write keeps its own fence: one ``SELECT ... FOR UPDATE`` finds the rows
still held by their write's owner and claim epoch (``(execution_id,
lease_owner, lease_epoch) IN (...)``), active, and with or without a pending
outcome as the write needs; only those are updated, by id, each with its own
values (an executemany UPDATE). A write whose row did not match gets
LeaseLostError and changes nothing (its attempt is not inserted); the others
in its batch commit. An error of the transaction (the database away, a
conflict after the transaction's own retries) is every write's error in that
batch, which the run's store retry handles as before.

A write whose caller was cancelled while it waited is dropped before its
batch starts; once its batch started it commits or not with the batch (as a
transaction the caller abandoned mid-way did before).

On PostgreSQL the batch locks its rows in ``execution_id`` order before
updating them, and so does the heartbeat's renewal (``storage.store``), so two
multi-row writers of the same rows never deadlock.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from marketplace_common.db import run_transaction
from sqlalchemy import ColumnElement, Table, bindparam, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import InstrumentedAttribute

from marketplace_execution.domain.errors import LeaseLostError
from marketplace_execution.domain.models import ACTIVE_STATUSES, AttemptView, Execution
from marketplace_execution.domain.ports import Lease
from marketplace_execution.storage.convert import attempt_row, execution_view
from marketplace_execution.storage.tables import AttemptRow, ExecutionRow

__all__ = ["MAX_BATCH", "FencedWriter", "WriteOne", "lock_in_order"]

_T: Table = ExecutionRow.__table__  # type: ignore[assignment]  # a Table at runtime
_A: Table = AttemptRow.__table__  # type: ignore[assignment]
_ACTIVE = tuple(s.value for s in ACTIVE_STATUSES)
_EXECUTION_COLUMNS = tuple(_T.columns)
_ATTEMPT_COLUMNS = tuple(_A.columns)
_ATTEMPT_KEYS = tuple(c.key for c in _A.columns if c.key != "id")

MAX_BATCH = 64
"""Writes in one transaction at most. The runs of a batch wake together when it
commits, and the event loop runs each one's next step in the same turn: a
bounded batch keeps that turn short (measured: 200 a batch let one turn take
tens of milliseconds), and batches follow one another at once anyway."""


@dataclass(slots=True)
class _Write:
    execution_id: uuid.UUID
    lease: Lease
    values: Mapping[str, object]
    deciding: bool
    attempt: AttemptView | None
    attempts: Sequence[AttemptView] | None
    done: asyncio.Future[Execution] = field(repr=False)

    def known_attempts(self) -> tuple[AttemptView, ...] | None:
        """The run's attempts plus the one this write stores (None: read them)."""
        if self.attempts is None:
            return None
        known = list(self.attempts)
        if self.attempt is not None and all(a.number != self.attempt.number for a in known):
            known.append(self.attempt)
        return tuple(known)

    def group(self) -> tuple[tuple[str, int], ...]:
        """Writes of one group share one UPDATE statement (executemany): the same
        columns, and the same expression object where a column is set to one."""
        return tuple(
            (column, id(value) if _is_expression(value) else 0)
            for column, value in sorted(self.values.items())
        )


class WriteOne(Protocol):
    """The store's write of a single fenced write, in a transaction of its own."""

    def __call__(
        self,
        execution_id: uuid.UUID,
        lease: Lease,
        values: Mapping[str, object],
        *,
        deciding: bool,
        attempt: AttemptView | None,
        attempts: Sequence[AttemptView] | None,
    ) -> Awaitable[Execution]: ...


class FencedWriter:
    """Queues fenced writes of one store and writes them in batches (module doc).

    A batch of one is written by ``write_one`` (the store's own single write:
    on PostgreSQL one autocommit statement), so an idle store pays nothing
    for the batching.
    """

    def __init__(self, engine: AsyncEngine, write_one: WriteOne) -> None:
        self._engine = engine
        self._write_one = write_one
        self._queued: list[_Write] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0
        """Transactions written so far (tests and benchmarks read it)."""

    async def write(
        self,
        execution_id: uuid.UUID,
        lease: Lease,
        values: Mapping[str, object],
        *,
        deciding: bool,
        attempt: AttemptView | None,
        attempts: Sequence[AttemptView] | None,
    ) -> Execution:
        """The execution after the write, or LeaseLostError when its fence failed."""
        loop = asyncio.get_running_loop()
        queued = _Write(
            execution_id, lease, values, deciding, attempt, attempts, loop.create_future()
        )
        self._queued.append(queued)
        if self._flusher is None or self._flusher.done():
            # A context of its own: the batch is nobody's span, log context or deadline.
            self._flusher = loop.create_task(
                self._flush(), name="execution-store-writes", context=contextvars.Context()
            )
        return await queued.done

    async def _flush(self) -> None:
        while self._queued:
            batch = self._next_batch()
            if batch:
                await self._write_batch(batch)

    def _next_batch(self) -> list[_Write]:
        batch: list[_Write] = []
        later: list[_Write] = []
        seen: set[uuid.UUID] = set()
        for queued in self._queued:
            if queued.done.done():
                continue  # its caller gave up waiting
            if len(batch) >= MAX_BATCH or queued.execution_id in seen:
                later.append(queued)  # one write per row and batch, in arrival order
                continue
            seen.add(queued.execution_id)
            batch.append(queued)
        self._queued = later
        return batch

    async def _write_batch(self, batch: list[_Write]) -> None:
        if len(batch) == 1:
            await self._write_alone(batch[0])
            return
        try:
            written = await run_transaction(self._engine, lambda s: _apply(s, batch))
        except asyncio.CancelledError:
            for queued in batch:
                queued.done.cancel()
            raise
        except Exception as exc:
            for queued in batch:
                if not queued.done.done():
                    queued.done.set_exception(exc)
            return
        finally:
            self.batches += 1
        for queued in batch:
            if queued.done.done():
                continue
            execution = written.get(queued.execution_id)
            if execution is None:
                lease = queued.lease
                queued.done.set_exception(
                    LeaseLostError(queued.execution_id, f"{lease.owner} (epoch {lease.epoch})")
                )
            else:
                queued.done.set_result(execution)

    async def _write_alone(self, queued: _Write) -> None:
        try:
            execution = await self._write_one(
                queued.execution_id,
                queued.lease,
                queued.values,
                deciding=queued.deciding,
                attempt=queued.attempt,
                attempts=queued.attempts,
            )
        except asyncio.CancelledError:
            queued.done.cancel()
            raise
        except Exception as exc:
            if not queued.done.done():
                queued.done.set_exception(exc)
        else:
            if not queued.done.done():
                queued.done.set_result(execution)
        finally:
            self.batches += 1


async def lock_in_order(session: AsyncConnection, ids: Sequence[uuid.UUID]) -> None:
    """On PostgreSQL, row locks on ``ids`` taken in ``execution_id`` order (see module doc)."""
    if len(ids) > 1 and session.dialect.name == "postgresql":
        await session.execute(
            select(_T.c.execution_id)
            .where(_T.c.execution_id.in_(ids))
            .order_by(_T.c.execution_id)
            .with_for_update()
        )


async def _apply(session: AsyncConnection, batch: Sequence[_Write]) -> dict[uuid.UUID, Execution]:
    """Writes ``batch`` in ``session``; the executions whose fence held, by id.

    Every statement has a fixed shape (expanding IN lists, executemany), so
    SQLAlchemy compiles each once per process whatever the batch size.
    """
    held = await _fence(session, batch)
    writes = [w for w in batch if held.get(w.execution_id) is w.deciding]
    groups: dict[tuple[tuple[str, int], ...], list[_Write]] = {}
    for queued in writes:
        groups.setdefault(queued.group(), []).append(queued)
    for group in groups.values():
        await session.execute(_update(group[0]), [_params(w) for w in group])
    attempts = [_attempt_params(w) for w in writes if w.attempt is not None]
    if attempts:
        insert = pg_insert if session.dialect.name == "postgresql" else sqlite_insert
        await session.execute(
            insert(_A).on_conflict_do_nothing(index_elements=["execution_id", "number"]),
            attempts,
        )
    if not writes:
        return {}
    ids = [w.execution_id for w in writes]
    query = select(*_EXECUTION_COLUMNS).where(_T.c.execution_id.in_(ids))
    rows = {row.execution_id: row for row in await session.execute(query)}
    known = {w.execution_id: w.known_attempts() for w in writes}
    found = await _attempts_of(session, [i for i, a in known.items() if a is None])
    written: dict[uuid.UUID, Execution] = {}
    for execution_id, row in rows.items():
        mine = known[execution_id]
        if mine is None:
            written[execution_id] = execution_view(row, found.get(execution_id, ()))  # type: ignore[arg-type]
        else:
            view = execution_view(row)  # type: ignore[arg-type]
            written[execution_id] = dataclasses.replace(view, attempts=mine)
    return written


async def _fence(session: AsyncConnection, batch: Sequence[_Write]) -> dict[uuid.UUID, bool]:
    """The rows of ``batch`` still held by their writes' leases and active, each with
    whether it awaits a decision (no pending outcome); locked in ``execution_id``
    order on PostgreSQL (SQLite: the transaction holds the only write lock)."""
    query = (
        select(_T.c.execution_id, _T.c.pending_outcome.is_(None))
        .where(
            _T.c.execution_id.in_([w.execution_id for w in batch]),
            tuple_(_T.c.execution_id, _T.c.lease_owner, _T.c.lease_epoch).in_(
                [(w.execution_id, w.lease.owner, w.lease.epoch) for w in batch]
            ),
            _T.c.status.in_(_ACTIVE),
        )
        .order_by(_T.c.execution_id)
    )
    if session.dialect.name == "postgresql":
        query = query.with_for_update()
    return {row[0]: bool(row[1]) for row in await session.execute(query)}


async def _attempts_of(
    session: AsyncConnection, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Any]]:
    """The attempt rows of ``ids`` in number order, by execution (one query)."""
    found: dict[uuid.UUID, list[Any]] = {}
    if ids:
        for attempt in await session.execute(
            select(*_ATTEMPT_COLUMNS)
            .where(_A.c.execution_id.in_(ids))
            .order_by(_A.c.execution_id, _A.c.number)
        ):
            found.setdefault(attempt.execution_id, []).append(attempt)
    return found


def _update(write: _Write) -> Any:
    """UPDATE of one row by id (executemany): the fence was checked under the row's lock."""
    values: dict[str, Any] = {}
    for column, value in write.values.items():
        # An expression of the row itself (finish sets status = pending_outcome)
        # is the same in every write of its group; plain values are parameters.
        values[column] = value if _is_expression(value) else bindparam(f"v_{column}")
    return update(_T).where(_T.c.execution_id == bindparam("v_execution_id")).values(**values)


def _params(write: _Write) -> dict[str, Any]:
    params: dict[str, Any] = {"v_execution_id": write.execution_id}
    for column, value in write.values.items():
        if not _is_expression(value):
            params[f"v_{column}"] = value
    return params


def _is_expression(value: object) -> bool:
    return isinstance(value, ColumnElement | InstrumentedAttribute)


def _attempt_params(write: _Write) -> dict[str, Any]:
    assert write.attempt is not None
    row = attempt_row(write.execution_id, write.attempt)
    return {key: getattr(row, key) for key in _ATTEMPT_KEYS}
