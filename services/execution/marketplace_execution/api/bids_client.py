"""BidsGateway over gRPC: BidService as the execution service calls it.

Deadlines: each call gets ``call_timeout(default)``, so inside an RPC (Submit's
GetTask) the caller's remaining deadline is passed on downstream. At most
``max_in_flight`` calls are on the wire at once; the others wait in the process
for their turn, and their deadline starts when they are sent. (A thousand runs
starting together sent a thousand StartTask calls at once: the bids service
answered them slower than their deadline, and they came back DEADLINE_EXCEEDED,
retried and so sent again, or CANCELLED, a refusal that failed the execution.)
The channel's interceptor (``create_channel``) adds the bearer token and the
request id. Failures come back as AgentError kinds (``status.from_rpc_error``),
so the worker can tell a transient outage (retry with the same event_id) from a
refusal.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from marketplace_common.classify import as_agent_error
from marketplace_common.client import call_timeout
from marketplace_common.errors import (
    AgentError,
    ErrorType,
    InternalError,
    NotFoundError,
    TransientError,
)
from marketplace_common.status import from_rpc_error

from marketplace_execution.api.convert import error_type_pb
from marketplace_execution.domain.errors import TaskNotFoundError
from marketplace_execution.domain.models import TaskInfo

T = TypeVar("T")


class GrpcBidsGateway:
    """The BidsGateway Protocol on a BidService channel."""

    def __init__(
        self, channel: Any, *, timeout: float = 5.0, max_in_flight: int | None = None
    ) -> None:
        self._stub = bids_pb2_grpc.BidServiceStub(channel)
        self._timeout = timeout
        self._slots = None if max_in_flight is None else asyncio.Semaphore(max_in_flight)

    async def _call(self, fn: Callable[..., Awaitable[T]], request: object) -> T:
        if self._slots is None:
            return await self._send(fn, request)
        async with self._slots:
            return await self._send(fn, request)

    async def _send(self, fn: Callable[..., Awaitable[T]], request: object) -> T:
        timeout = call_timeout(self._timeout)
        try:
            return await fn(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc
        except AgentError:
            raise
        except Exception as exc:  # the domain sees AgentErrors only
            raise as_agent_error(exc) from exc

    async def get_task(self, task_id: uuid.UUID) -> TaskInfo:
        try:
            response = await self._call(
                self._stub.GetTask, bids_pb2.GetTaskRequest(task_id=str(task_id))
            )
        except NotFoundError as exc:
            raise TaskNotFoundError(task_id) from exc
        except AgentError as exc:
            raise _as_dependency_error(exc) from exc
        task = response.task
        return TaskInfo(
            task_id=uuid.UUID(task.task_id),
            status=bids_pb2.TaskStatus.Name(task.status).removeprefix("TASK_STATUS_"),
            title=task.title,
            description=task.description,
            execution_id=task.execution_id,
            client_email=task.client_email,
            agent_id=task.agent_id,
        )

    async def start_task(self, task_id: uuid.UUID, execution_id: uuid.UUID, event_id: str) -> None:
        request = bids_pb2.StartTaskRequest(
            task_id=str(task_id), execution_id=str(execution_id), event_id=event_id
        )
        await self._call(self._stub.StartTask, request)

    async def complete_task(
        self, task_id: uuid.UUID, execution_id: uuid.UUID, event_id: str, result: str
    ) -> None:
        request = bids_pb2.CompleteTaskRequest(
            task_id=str(task_id), execution_id=str(execution_id), event_id=event_id, result=result
        )
        await self._call(self._stub.CompleteTask, request)

    async def fail_task(
        self,
        task_id: uuid.UUID,
        execution_id: uuid.UUID,
        event_id: str,
        error_type: ErrorType,
        message: str,
    ) -> None:
        request = bids_pb2.FailTaskRequest(
            task_id=str(task_id),
            execution_id=str(execution_id),
            event_id=event_id,
            error_type=error_type_pb(error_type),
            message=message[:1000],
        )
        await self._call(self._stub.FailTask, request)


def _as_dependency_error(exc: AgentError) -> AgentError:
    """A BidService error as our caller should see it: outages stay transient
    (UNAVAILABLE etc.), but BidService refusing *us* (auth, bad request) is our
    misconfiguration, not the caller's fault."""
    if isinstance(exc, TransientError) or exc.error_type is ErrorType.TRANSIENT:
        return exc
    return InternalError(
        "BidService refused the execution service's call", metadata={"bidsReason": exc.reason}
    )
