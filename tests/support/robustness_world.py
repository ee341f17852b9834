"""Real objects for the robustness tests, and cases of bad requests against them.

A :class:`World` makes tasks, bids, delivery tokens and executions in every
state through the public API (every call checked like any other); a
:class:`Case` is one request against them with the error the contracts
promise, and :func:`run_cases` checks a list of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message
from marketplace.bids.v1 import bids_pb2
from marketplace.common.v1 import common_pb2
from marketplace.execution.v1 import execution_pb2
from robustness_support import ALICE, Services, new_id, ok, rpc

FP = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND
OK = grpc.StatusCode.OK
REUSED = "IDEMPOTENCY_KEY_REUSED"
UNKNOWN_ENUM: Any = 99  # an enum number no proto names (the stubs only allow named ones)


def money(units: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code="EUR", units=units)


@dataclass
class World:
    """Real objects in every state, made through the public API."""

    services: Services
    job_of: dict[str, str] = field(default_factory=dict)
    known_ids: list[str] = field(default_factory=list)  # of every kind, for id fields

    def _job(self) -> str:
        return f"world-job-{len(self.job_of) + 1}"

    def _key(self) -> str:
        """A fresh event_id, remembered so later requests can reuse it by mistake."""
        key = new_id()
        self.known_ids.append(key)
        return key

    async def task(self, status: str = "PENDING") -> tuple[str, str]:
        """A task of alice's in ``status``; (task_id, the execution_id that moved it)."""
        created = bids_pb2.CreateTaskRequest(
            request_id=new_id(), client_email=ALICE, title="world task", description="d",
            budget=common_pb2.Money(currency_code="EUR", units=12, nanos=500_000_000),
        )  # fmt: skip
        reply = await ok(self.services, "CreateTask", created, "client")
        task_id = bids_pb2.CreateTaskResponse.FromString(reply).task.task_id
        execution_id = new_id()
        self.known_ids += [task_id, created.request_id]
        if status == "PENDING":
            return task_id, ""
        start = bids_pb2.StartTaskRequest(
            task_id=task_id, execution_id=execution_id, event_id=self._key()
        )
        await ok(self.services, "StartTask", start, "service")
        if status == "COMPLETED":
            done = bids_pb2.CompleteTaskRequest(
                task_id=task_id, execution_id=execution_id, event_id=self._key(), result="done"
            )
            await ok(self.services, "CompleteTask", done, "service")
        elif status == "FAILED":
            failed = bids_pb2.FailTaskRequest(
                task_id=task_id, execution_id=execution_id, event_id=self._key(),
                error_type=common_pb2.ERROR_TYPE_PERMANENT, message="boom",
            )  # fmt: skip
            await ok(self.services, "FailTask", failed, "service")
        return task_id, execution_id

    async def bid(self, status: str = "PENDING") -> str:
        """A bid of agent-1's in ``status`` (ACCEPTED ones by alice)."""
        placed = bids_pb2.PlaceBidRequest(
            request_id=new_id(), marketplace="upwork", job_id=self._job(), agent_id="agent-1",
            amount=common_pb2.Money(currency_code="EUR", units=7), proposal="p",
        )  # fmt: skip
        reply = await ok(self.services, "PlaceBid", placed, "agent")
        bid_id = bids_pb2.PlaceBidResponse.FromString(reply).bid.bid_id
        self.job_of[bid_id] = placed.job_id
        self.known_ids += [bid_id, placed.request_id]
        if status == "WITHDRAWN":
            withdraw = bids_pb2.WithdrawBidRequest(bid_id=bid_id, event_id=self._key())
            await ok(self.services, "WithdrawBid", withdraw, "agent")
        elif status == "REJECTED":
            reject = bids_pb2.RejectBidRequest(bid_id=bid_id, event_id=self._key(), reason="no")
            await ok(self.services, "RejectBid", reject, "client")
        elif status == "ACCEPTED":
            accept = bids_pb2.AcceptBidRequest(
                bid_id=bid_id, event_id=self._key(), client_email=ALICE, title="from bid"
            )
            await ok(self.services, "AcceptBid", accept, "client")
        return bid_id

    async def won_task(self) -> str:
        """A PENDING task of alice's, from agent-1's accepted bid (agent-1 may submit it)."""
        bid_id = await self.bid()
        accept = bids_pb2.AcceptBidRequest(
            bid_id=bid_id, event_id=self._key(), client_email=ALICE, title="won"
        )
        reply = await ok(self.services, "AcceptBid", accept, "client")
        task_id = bids_pb2.AcceptBidResponse.FromString(reply).task.task_id
        self.known_ids.append(task_id)
        return task_id

    async def delivery_token(self, task_id: str) -> str:
        request = bids_pb2.CreateDeliveryTokenRequest(task_id=task_id)
        reply = await ok(self.services, "CreateDeliveryToken", request, "client")
        return bids_pb2.CreateDeliveryTokenResponse.FromString(reply).token

    async def execution(self) -> tuple[str, execution_pb2.SubmitExecutionRequest]:
        """A SUCCEEDED execution run by the worker on a task agent-1 won from alice:
        (execution_id, its request)."""
        task_id = await self.won_task()
        submit = execution_pb2.SubmitExecutionRequest(request_id=new_id(), task_id=task_id)
        reply = await ok(self.services, "SubmitExecution", submit, "agent")
        execution_id = execution_pb2.SubmitExecutionResponse.FromString(
            reply
        ).execution.execution_id
        # call() rebased the ledger once the worker was idle, so the run is over.
        get = execution_pb2.GetExecutionRequest(execution_id=execution_id)
        reply = await ok(self.services, "GetExecution", get, "agent")
        status = execution_pb2.GetExecutionResponse.FromString(reply).execution.status
        assert status == execution_pb2.EXECUTION_STATUS_SUCCEEDED, status
        self.known_ids += [execution_id, submit.request_id]
        return execution_id, submit


@dataclass(frozen=True)
class Case:
    """One request against real objects and the error the contracts promise for it."""

    name: str
    method: str
    request: Message
    caller: str
    code: grpc.StatusCode
    reason: str = ""
    fields: frozenset[str] = frozenset()
    replay: bool = False  # an idempotent repeat: OK, and nothing changes


async def run_cases(services: Services, cases: list[Case]) -> None:
    """Every case answers its code (and reason, and exactly its bad top-level fields);
    the ledger checks that none of the refused ones changed a table."""
    wrong = []
    for case in cases:
        got = await rpc(services, case.method, case.request, case.caller, replay=case.replay)
        named = frozenset(f.split(".")[0] for f in got.fields)
        if (
            got.code is not case.code
            or (case.reason and got.reason != case.reason)
            or (case.fields and named != case.fields)
        ):
            wrong.append(f"{case.name}: got {got.code.name} {got.reason} {sorted(named)} "
                         f"({got.message[:200]})")  # fmt: skip
    assert not wrong, "\n".join(wrong)
