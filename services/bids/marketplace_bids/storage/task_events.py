"""The task audit trail's repository: TaskEvent rows, written by transitions, read by
ListTaskEvents (oldest first, keyset after the page token's position)."""

from __future__ import annotations

from typing import Any, cast

from marketplace_common.db_statements import Statement
from marketplace_common.paging import PageCursor
from sqlalchemy import ColumnElement, Select, bindparam, select

from marketplace_bids.domain.models import TaskEvent
from marketplace_bids.domain.values import TaskStatus
from marketplace_bids.storage.repositories import (
    _LIMIT,
    _after_params,
    _keyset,
    _Repository,
    _Shapes,
    _table,
    insert_all,
)
from marketplace_bids.storage.tables import TaskEventRow

_TASK_EVENTS = _table(TaskEventRow)
_TASK_EVENT_ADD = Statement(insert_all(_TASK_EVENTS))


def _task_event(row: Any) -> TaskEvent:
    return TaskEvent(
        event_id=row["event_id"],
        task_id=row["task_id"],
        previous_status=TaskStatus(row["previous_status"]),
        new_status=TaskStatus(row["new_status"]),
        execution_id=row["execution_id"],
        actor=row["actor"],
        created_at=row["created_at"],
    )


def _task_event_list_build(shape: tuple[bool, ...]) -> Select[Any]:
    (later,) = shape
    conditions: list[ColumnElement[bool]] = [TaskEventRow.task_id == bindparam("task_id")]
    if later:
        conditions.append(
            _keyset(TaskEventRow.created_at, TaskEventRow.event_id, newest_first=False)
        )
    return (
        select(TaskEventRow)
        .where(*conditions)
        .order_by(TaskEventRow.created_at, TaskEventRow.event_id)
        .limit(_LIMIT)
    )


_TASK_EVENT_LISTS = _Shapes(_task_event_list_build)


def task_event_list_statement(task_id: str, after: PageCursor | None, limit: int) -> Select[Any]:
    """ListTaskEvents' query with its values: oldest first, keyset after ``after``."""
    params = {"task_id": task_id, **_after_params(after), "limit": limit}
    return cast(Select[Any], _TASK_EVENT_LISTS.get((after is not None,)).statement).params(params)


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
        await _TASK_EVENT_ADD.execute(self._c, values)

    async def list(self, task_id: str, after: PageCursor | None, limit: int) -> list[TaskEvent]:
        statement = _TASK_EVENT_LISTS.get((after is not None,))
        params = {"task_id": task_id, **_after_params(after), "limit": limit}
        return [_task_event(r) for r in await statement.fetch(self._c, params)]
