"""The task audit trail's repository: TaskEvent rows, written by transitions, read by
ListTaskEvents (oldest first, keyset after the page token's position)."""

from __future__ import annotations

from typing import Any

from marketplace_common.paging import PageCursor
from sqlalchemy import ColumnElement, Select, insert, select

from marketplace_bids.domain.models import TaskEvent
from marketplace_bids.domain.values import TaskStatus
from marketplace_bids.storage.repositories import _after, _Repository, _table
from marketplace_bids.storage.tables import TaskEventRow

_TASK_EVENTS = _table(TaskEventRow)


def _task_event(row: Any) -> TaskEvent:
    return TaskEvent(
        event_id=row.event_id,
        task_id=row.task_id,
        previous_status=TaskStatus(row.previous_status),
        new_status=TaskStatus(row.new_status),
        execution_id=row.execution_id,
        actor=row.actor,
        created_at=row.created_at,
    )


def task_event_list_statement(task_id: str, after: PageCursor | None, limit: int) -> Select[Any]:
    """ListTaskEvents' query: oldest first, keyset after ``after``."""
    conditions: list[ColumnElement[bool]] = [TaskEventRow.task_id == task_id]
    keyset = _after(TaskEventRow.created_at, TaskEventRow.event_id, after, newest_first=False)
    if keyset is not None:
        conditions.append(keyset)
    return (
        select(TaskEventRow)
        .where(*conditions)
        .order_by(TaskEventRow.created_at, TaskEventRow.event_id)
        .limit(limit)
    )


class SqlTaskEventRepository(_Repository):
    async def add(self, event: TaskEvent) -> None:
        values = {
            "event_id": event.event_id,
            "task_id": event.task_id,
            "previous_status": event.previous_status.value,
            "new_status": event.new_status.value,
            "execution_id": event.execution_id,
            "actor": event.actor,
            "created_at": event.created_at,
        }
        await self._execute(insert(_TASK_EVENTS), values)

    async def list(self, task_id: str, after: PageCursor | None, limit: int) -> list[TaskEvent]:
        stmt = task_event_list_statement(task_id, after, limit)
        return [_task_event(r) for r in await self._execute(stmt)]
