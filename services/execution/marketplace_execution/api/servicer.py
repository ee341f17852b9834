"""ExecutionService over gRPC: validate at the edge, call the domain, convert back.

Errors are raised as AgentError kinds; the kit's error-mapping interceptor turns
them into statuses with ErrorInfo (domain "execution.marketplace").
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc.aio
from marketplace.execution.v1 import execution_pb2, execution_pb2_grpc
from marketplace_common import tracing
from marketplace_common.auth import current_principal
from marketplace_common.client import DEADLINE_MARGIN_SECONDS
from marketplace_common.errors import (
    AgentError,
    ErrorType,
    LLMOutputInvalidError,
    PermanentError,
)
from marketplace_common.rpc_context import current_call

from marketplace_execution.api.convert import (
    attempt_pb,
    event_pb,
    execution_pb,
    fields,
    status_filter,
    usage_pb,
)
from marketplace_execution.domain.models import CallOrigin, Usage
from marketplace_execution.domain.ports import JobResult
from marketplace_execution.domain.requests import (
    CompleteRequest,
    ExecutionRef,
    ListRequest,
    SubmitRequest,
    parse,
)
from marketplace_execution.domain.service import ExecutionService

DOMAIN = "execution.marketplace"
SERVICE_NAME: str = execution_pb2.DESCRIPTOR.services_by_name["ExecutionService"].full_name

Context = grpc.aio.ServicerContext[object, object]


class ExecutionServicer(execution_pb2_grpc.ExecutionServiceServicer):
    """The gRPC face of :class:`ExecutionService`."""

    def __init__(self, service: ExecutionService) -> None:
        self._service = service

    async def SubmitExecution(
        self, request: execution_pb2.SubmitExecutionRequest, context: Context
    ) -> execution_pb2.SubmitExecutionResponse:
        names = ("request_id", "task_id", "prompt", "model", "output_schema", "max_attempts")
        submit = parse(SubmitRequest, fields(request, *names))
        execution = await self._service.submit(current_principal(), submit, _origin())
        return execution_pb2.SubmitExecutionResponse(execution=execution_pb(execution))

    async def GetExecution(
        self, request: execution_pb2.GetExecutionRequest, context: Context
    ) -> execution_pb2.GetExecutionResponse:
        ref = parse(ExecutionRef, fields(request, "execution_id"))
        execution = await self._service.get(current_principal(), ref.execution_id)
        return execution_pb2.GetExecutionResponse(execution=execution_pb(execution))

    async def ListExecutions(
        self, request: execution_pb2.ListExecutionsRequest, context: Context
    ) -> execution_pb2.ListExecutionsResponse:
        data = fields(request, "task_id", "page_size", "page_token")
        data["status"] = status_filter(request.status)
        page = await self._service.list(current_principal(), parse(ListRequest, data))
        return execution_pb2.ListExecutionsResponse(
            executions=[execution_pb(e) for e in page.executions],
            next_page_token=page.next_page_token,
        )

    async def WatchExecution(
        self, request: execution_pb2.WatchExecutionRequest, context: Context
    ) -> AsyncIterator[execution_pb2.WatchExecutionResponse]:
        ref = parse(ExecutionRef, fields(request, "execution_id"))
        async for event in self._service.watch(current_principal(), ref.execution_id):
            yield event_pb(event)

    async def CancelExecution(
        self, request: execution_pb2.CancelExecutionRequest, context: Context
    ) -> execution_pb2.CancelExecutionResponse:
        ref = parse(ExecutionRef, fields(request, "execution_id"))
        execution = await self._service.cancel(current_principal(), ref.execution_id)
        return execution_pb2.CancelExecutionResponse(execution=execution_pb(execution))

    async def Complete(
        self, request: execution_pb2.CompleteRequest, context: Context
    ) -> execution_pb2.CompleteResponse:
        names = ("prompt", "model", "output_schema", "max_attempts")
        complete = parse(CompleteRequest, fields(request, *names))
        result = await self._service.complete(current_principal(), complete, _time_left(context))
        if result.error is not None or result.text is None:
            raise _complete_error(result)
        return execution_pb2.CompleteResponse(
            text=result.text,
            attempts=[attempt_pb(a) for a in result.attempts],
            model=result.model,
            usage=usage_pb(Usage.total(result.attempts)),
        )


def _time_left(context: Context) -> float | None:
    """Seconds until the caller's deadline, less a margin to send the answer back
    (None without a deadline)."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return max(remaining - DEADLINE_MARGIN_SECONDS, 0.001)


def _complete_error(result: JobResult) -> AgentError:
    """What Complete answers when the loop gave up: the last error, LLM_FIXABLE as
    FAILED_PRECONDITION LLM_OUTPUT_INVALID (docs/errors.md)."""
    error = result.error or PermanentError("the attempt loop returned no answer")
    if error.error_type is ErrorType.LLM_FIXABLE:
        return LLMOutputInvalidError(error.message, violations=error.violations)
    return error


def _origin() -> CallOrigin:
    """The current call's trace context and request id, stored with a new execution."""
    call = current_call()
    return CallOrigin(
        trace_parent=tracing.current_traceparent(),
        request_id=None if call is None else call.request_id,
    )
