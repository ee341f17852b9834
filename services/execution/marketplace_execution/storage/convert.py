"""Rows to domain values and back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from marketplace_common.errors import ErrorType

from marketplace_execution.domain.models import (
    AttemptView,
    CallOrigin,
    Execution,
    ExecutionStatus,
    NewExecution,
)
from marketplace_execution.storage.tables import AttemptRow, ExecutionRow


def _error_type(value: str | None) -> ErrorType | None:
    return None if value is None else ErrorType(value)


def attempt_view(row: AttemptRow) -> AttemptView:
    return AttemptView(
        number=row.number,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error_type=_error_type(row.error_type),
        code=row.code,
        message=row.message,
        retry_delay=row.retry_delay,
        delay_source=row.delay_source,
        pacing_delay=row.pacing_delay,
        model=row.model,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cost_nanos=row.cost_nanos,
    )


def execution_view(row: ExecutionRow, attempts: Sequence[AttemptRow] = ()) -> Execution:
    return Execution(
        execution_id=row.execution_id,
        task_id=row.task_id,
        request_id=row.request_id,
        status=ExecutionStatus(row.status),
        prompt=row.prompt,
        model=row.model,
        output_schema=row.output_schema,
        max_attempts=row.max_attempts,
        created_at=row.created_at,
        updated_at=row.updated_at,
        result=row.result,
        error_type=_error_type(row.error_type),
        error_message=row.error_message,
        error_reason=row.error_reason,
        pending_outcome=None
        if row.pending_outcome is None
        else ExecutionStatus(row.pending_outcome),
        cancel_requested=row.cancel_requested,
        lease_owner=row.lease_owner,
        lease_epoch=row.lease_epoch,
        attempts=tuple(attempt_view(a) for a in attempts),
        client_email=row.client_email,
        agent_id=row.agent_id,
        submitted_by=row.submitted_by,
        origin=_origin(row.trace_parent, row.submit_request_id),
    )


def _origin(trace_parent: str | None, request_id: str | None) -> CallOrigin | None:
    if trace_parent is None and request_id is None:
        return None
    return CallOrigin(trace_parent=trace_parent, request_id=request_id)


def new_values(new: NewExecution) -> dict[str, Any]:
    """The INSERT's values of a new execution (QUEUED, its lease free at once)."""
    return {
        "execution_id": new.execution_id,
        "task_id": new.task_id,
        "request_id": new.request_id,
        "request_fingerprint": new.request_fingerprint,
        "prompt": new.prompt,
        "model": new.model,
        "output_schema": new.output_schema,
        "max_attempts": new.max_attempts,
        "status": ExecutionStatus.QUEUED.value,
        "cancel_requested": False,
        "lease_expires_at": new.created_at,
        "created_at": new.created_at,
        "updated_at": new.created_at,
        "client_email": new.client_email,
        "agent_id": new.agent_id,
        "submitted_by": new.submitted_by,
        "trace_parent": None if new.origin is None else new.origin.trace_parent,
        "submit_request_id": None if new.origin is None else new.origin.request_id,
    }


def attempt_row(execution_id: object, attempt: AttemptView) -> AttemptRow:
    return AttemptRow(
        execution_id=execution_id,
        number=attempt.number,
        started_at=attempt.started_at,
        finished_at=attempt.finished_at,
        error_type=None if attempt.error_type is None else attempt.error_type.value,
        code=attempt.code[:100],
        message=attempt.message,
        retry_delay=attempt.retry_delay,
        delay_source=attempt.delay_source,
        pacing_delay=attempt.pacing_delay,
        model=attempt.model[:200],
        prompt_tokens=attempt.prompt_tokens,
        completion_tokens=attempt.completion_tokens,
        cost_nanos=attempt.cost_nanos,
    )
