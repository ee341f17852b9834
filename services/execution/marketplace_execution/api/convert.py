"""Domain values to protobuf messages and back: the only place that knows both."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from marketplace.common.v1 import common_pb2
from marketplace.execution.v1 import execution_pb2
from marketplace_common.errors import ErrorType

from marketplace_execution.domain.models import (
    AttemptView,
    Execution,
    ExecutionEvent,
    ExecutionStatus,
    Usage,
)

_DELAY_SOURCES = {
    "BACKOFF": execution_pb2.RETRY_DELAY_SOURCE_BACKOFF,
    "SERVER_RETRY_AFTER": execution_pb2.RETRY_DELAY_SOURCE_SERVER_RETRY_AFTER,
    "PACING": execution_pb2.RETRY_DELAY_SOURCE_PACING,
}


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def duration(seconds: float) -> Duration:
    d = Duration()
    d.FromTimedelta(timedelta(seconds=seconds))
    return d


def error_type_pb(value: ErrorType | None) -> str:
    """The wire enum name (protobuf constructors accept names)."""
    return "ERROR_TYPE_UNSPECIFIED" if value is None else f"ERROR_TYPE_{value.value}"


def status_pb(value: ExecutionStatus | None) -> str:
    """The wire enum name."""
    return "EXECUTION_STATUS_UNSPECIFIED" if value is None else f"EXECUTION_STATUS_{value.value}"


def status_filter(value: int) -> str | None:
    """A list filter's status name, or None for "any"; unknown numbers are passed on as
    text so validation reports them."""
    if value == execution_pb2.EXECUTION_STATUS_UNSPECIFIED:
        return None
    try:
        return execution_pb2.ExecutionStatus.Name(value).removeprefix("EXECUTION_STATUS_")
    except ValueError:
        return str(value)


def attempt_pb(attempt: AttemptView) -> execution_pb2.Attempt:
    return execution_pb2.Attempt(
        number=attempt.number,
        started_at=timestamp(attempt.started_at),
        finished_at=timestamp(attempt.finished_at),
        error_type=error_type_pb(attempt.error_type),
        code=attempt.code,
        message=attempt.message,
        retry_delay=duration(attempt.retry_delay),
        retry_delay_source=_DELAY_SOURCES.get(
            attempt.delay_source, execution_pb2.RETRY_DELAY_SOURCE_UNSPECIFIED
        ),
        pacing_delay=duration(attempt.pacing_delay),
        model=attempt.model,
        usage=usage_pb(attempt.usage),
    )


def usage_pb(usage: Usage) -> execution_pb2.Usage:
    """Tokens and their cost in USD (Money: whole units and nanos)."""
    units, nanos = divmod(usage.cost_nanos, 1_000_000_000)
    cost = common_pb2.Money(currency_code="USD", units=units, nanos=nanos)
    return execution_pb2.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost=cost,
    )


def execution_pb(execution: Execution) -> execution_pb2.Execution:
    return execution_pb2.Execution(
        execution_id=str(execution.execution_id),
        task_id=str(execution.task_id),
        status=status_pb(execution.status),
        attempts=[attempt_pb(a) for a in execution.attempts],
        result=execution.result or "" if execution.status is ExecutionStatus.SUCCEEDED else "",
        error_type=error_type_pb(execution.error_type if execution.terminal else None),
        error_message=(execution.error_message or "") if execution.terminal else "",
        created_at=timestamp(execution.created_at),
        updated_at=timestamp(execution.updated_at),
        model=execution.model,
        max_attempts=execution.max_attempts,
        usage=usage_pb(execution.usage),
        error_reason=(execution.error_reason or "") if execution.terminal else "",
    )


def event_pb(event: ExecutionEvent) -> execution_pb2.WatchExecutionResponse:
    message = execution_pb2.ExecutionEvent(execution=execution_pb(event.execution))
    if event.attempt is not None:
        message.attempt.CopyFrom(attempt_pb(event.attempt))
    elif event.status_change is not None:
        previous, new = event.status_change
        message.status_change.CopyFrom(
            execution_pb2.StatusChange(
                previous_status=status_pb(previous), new_status=status_pb(new)
            )
        )
    return execution_pb2.WatchExecutionResponse(event=message)


def fields(message: Any, *names: str) -> dict[str, Any]:
    """The named scalar fields of a request, for pydantic validation."""
    return {name: getattr(message, name) for name in names}
