"""marketctl executions and complete: the ExecutionService's RPCs, and a live watch."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, cast

import grpc
import typer
from marketplace.common.v1 import common_pb2
from marketplace.execution.v1 import execution_pb2, execution_pb2_grpc
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from marketplace_cli import values as v
from marketplace_cli.app import call, ensure_id, parsed, state, usage_error
from marketplace_cli.errors import CallError, Exit
from marketplace_cli.output import note, print_json, record, rows, show

executions = typer.Typer(help="Executions: an LLM doing a task's work.", no_args_is_help=True)

TERMINAL = {
    execution_pb2.EXECUTION_STATUS_SUCCEEDED,
    execution_pb2.EXECUTION_STATUS_FAILED,
    execution_pb2.EXECUTION_STATUS_CANCELLED,
}
Model = Annotated[str, typer.Option(help="The model (empty: the service's default).")]
Schema = Annotated[
    str,
    typer.Option(help="JSON Schema the answer must satisfy: JSON text, or @FILE to read it."),
]
MaxAttempts = Annotated[int, typer.Option(help="Attempts at most (0: the service's default).")]


def _stub(ctx: typer.Context) -> execution_pb2_grpc.ExecutionServiceStub:
    cli = state(ctx)
    return execution_pb2_grpc.ExecutionServiceStub(cli.conn.channel(cli.conn.execution))


def _status(value: int) -> str:
    return v.enum_text(execution_pb2.ExecutionStatus, "EXECUTION_STATUS_", value)


def _error_type(value: int) -> str:
    return v.enum_text(common_pb2.ErrorType, "ERROR_TYPE_", value)


def _source(value: int) -> str:
    return v.enum_text(execution_pb2.RetryDelaySource, "RETRY_DELAY_SOURCE_", value)


def _schema(text: str) -> str:
    if not text.startswith("@"):
        return text
    path = Path(text[1:])
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise usage_error(f"cannot read {path}: {exc.strerror}") from None


def _emit(ctx: typer.Context, response: Any, human: Any) -> None:
    if state(ctx).json:
        print_json(response)
    else:
        human()


def attempt_outcome(attempt: execution_pb2.Attempt) -> str:
    if not attempt.HasField("finished_at"):
        return "running"
    return "ok" if attempt.error_type == common_pb2.ERROR_TYPE_UNSPECIFIED else "error"


def attempts_table(attempts: Iterable[execution_pb2.Attempt]) -> Table:
    """One row per attempt: outcome, error type and code, the delay and its source, tokens."""
    return rows(
        "attempts",
        (
            "#",
            "outcome",
            "error type",
            "code",
            "delay",
            "delay source",
            "pacing",
            "model",
            "prompt tok",
            "completion tok",
        ),
        (
            (
                str(a.number),
                attempt_outcome(a),
                _error_type(a.error_type),
                a.code,
                v.seconds(a.retry_delay),
                _source(a.retry_delay_source),
                v.seconds(a.pacing_delay),
                a.model,
                str(a.usage.prompt_tokens) if a.HasField("usage") else "",
                str(a.usage.completion_tokens) if a.HasField("usage") else "",
            )
            for a in attempts
        ),
    )


def _usage(usage: execution_pb2.Usage) -> str:
    if usage.prompt_tokens == 0 and usage.completion_tokens == 0:
        return ""
    cost = v.money_text(usage.cost) if usage.HasField("cost") else ""
    tokens = f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens"
    return f"{tokens}{', ' + cost if cost else ''}"


def _summary(e: execution_pb2.Execution) -> list[tuple[str, str]]:
    return [
        ("execution_id", e.execution_id),
        ("task_id", e.task_id),
        ("status", _status(e.status)),
        ("model", e.model),
        ("attempts", f"{len(e.attempts)} of at most {e.max_attempts}"),
        ("usage", _usage(e.usage)),
        ("error_type", _error_type(e.error_type)),
        ("error_reason", e.error_reason),
        ("error_message", e.error_message),
        ("result", e.result),
        ("created_at", v.when(e.created_at)),
        ("updated_at", v.when(e.updated_at)),
    ]


def _show_execution(e: execution_pb2.Execution) -> None:
    record("execution", _summary(e))
    if e.attempts:
        show(attempts_table(e.attempts))


@executions.command("submit")
def execution_submit(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Option(help="The task to work on.")],
    prompt: Annotated[str, typer.Option(help="What to ask the LLM.")],
    model: Model = "",
    output_schema: Schema = "",
    max_attempts: MaxAttempts = 0,
    request_id: Annotated[
        str | None, typer.Option(help="Idempotency key (generated if not given).")
    ] = None,
) -> None:
    """Queue an execution of a task (the winning agent, or the task's client)."""
    request = execution_pb2.SubmitExecutionRequest(
        request_id=ensure_id(request_id, "request_id"),
        task_id=task_id,
        prompt=prompt,
        model=model,
        output_schema=_schema(output_schema),
        max_attempts=max_attempts,
    )
    response = call(ctx, _stub(ctx).SubmitExecution, request)
    _emit(ctx, response, lambda: _show_execution(response.execution))


@executions.command("get")
def execution_get(ctx: typer.Context, execution_id: str) -> None:
    """Show one execution with its attempts."""
    request = execution_pb2.GetExecutionRequest(execution_id=execution_id)
    response = call(ctx, _stub(ctx).GetExecution, request)
    _emit(ctx, response, lambda: _show_execution(response.execution))


@executions.command("list")
def execution_list(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Option(help="Only this task's executions.")] = "",
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, ...")] = None,
    page_size: Annotated[int, typer.Option(help="Items per page (0: default).")] = 0,
    page_token: Annotated[str, typer.Option(help="A previous page's next_page_token.")] = "",
) -> None:
    """List executions, newest first."""
    request = execution_pb2.ListExecutionsRequest(
        task_id=task_id, page_size=page_size, page_token=page_token
    )
    if status is not None:
        code = parsed(
            lambda: v.enum_value(execution_pb2.ExecutionStatus, "EXECUTION_STATUS_", status)
        )
        request.status = cast("execution_pb2.ExecutionStatus", code)
    response = call(ctx, _stub(ctx).ListExecutions, request)

    def human() -> None:
        show(
            rows(
                "executions",
                ("execution_id", "task_id", "status", "attempts", "model", "created_at"),
                (
                    (
                        e.execution_id,
                        e.task_id,
                        _status(e.status),
                        str(len(e.attempts)),
                        e.model,
                        v.when(e.created_at),
                    )
                    for e in response.executions
                ),
            )
        )
        if response.next_page_token:
            note(f"next page: --page-token {response.next_page_token}")

    _emit(ctx, response, human)


@executions.command("cancel")
def execution_cancel(ctx: typer.Context, execution_id: str) -> None:
    """Cancel an execution that has not ended."""
    request = execution_pb2.CancelExecutionRequest(execution_id=execution_id)
    response = call(ctx, _stub(ctx).CancelExecution, request)
    _emit(ctx, response, lambda: _show_execution(response.execution))


def _view(e: execution_pb2.Execution | None, last: str) -> Group:
    if e is None:
        return Group(Text("waiting for the first event..."))
    head = Text(f"execution {e.execution_id}  {_status(e.status)}", style="bold")
    parts: list[Any] = [head]
    if e.attempts:
        parts.append(attempts_table(e.attempts))
    usage = _usage(e.usage)
    if usage:
        parts.append(Text(f"usage: {usage}"))
    if last:
        parts.append(Text(last, style="dim"))
    if e.status in TERMINAL:
        tail = e.result if e.status == execution_pb2.EXECUTION_STATUS_SUCCEEDED else ""
        if e.error_message:
            tail = f"{e.error_reason or _error_type(e.error_type)}: {e.error_message}"
        if tail:
            parts.append(Text(tail))
    return Group(*parts)


def _describe(event: execution_pb2.ExecutionEvent) -> str:
    if event.HasField("status_change"):
        change = event.status_change
        return f"status {_status(change.previous_status)} -> {_status(change.new_status)}"
    if event.HasField("attempt"):
        a = event.attempt
        return f"attempt {a.number}: {attempt_outcome(a)}"
    return ""


@executions.command("watch")
def execution_watch(ctx: typer.Context, execution_id: str) -> None:
    """A live view of the attempts until the execution ends (exit 8 unless it SUCCEEDED).

    With --json, each event of the stream is printed as one line of proto JSON.
    """
    cli = state(ctx)
    request = execution_pb2.WatchExecutionRequest(execution_id=execution_id)
    latest: execution_pb2.Execution | None = None
    try:
        stream = _stub(ctx).WatchExecution(request, metadata=cli.conn.metadata())
        if cli.json:
            for message in stream:
                print_json(message, indent=None)
                latest = message.event.execution
        else:
            with Live(_view(None, ""), auto_refresh=False, transient=False) as live:
                for message in stream:
                    latest = message.event.execution
                    live.update(_view(latest, _describe(message.event)), refresh=True)
    except grpc.RpcError as exc:
        raise typer.Exit(int(CallError.from_rpc_error(exc).report(as_json=cli.json))) from None
    if latest is None or latest.status != execution_pb2.EXECUTION_STATUS_SUCCEEDED:
        raise typer.Exit(int(Exit.NOT_SUCCEEDED))


def complete(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Option(help="What to ask the LLM.")],
    model: Model = "",
    output_schema: Schema = "",
    max_attempts: MaxAttempts = 0,
) -> None:
    """A one-shot completion (no task), with the service's retries."""
    request = execution_pb2.CompleteRequest(
        prompt=prompt,
        model=model,
        output_schema=_schema(output_schema),
        max_attempts=max_attempts,
    )
    response = call(ctx, _stub(ctx).Complete, request)

    def human() -> None:
        record("completion", [("model", response.model), ("usage", _usage(response.usage))])
        if response.attempts:
            show(attempts_table(response.attempts))
        print(response.text)

    _emit(ctx, response, human)
