"""Bad requests against real objects are refused as documented and change nothing.

Transitions from the wrong state, reused idempotency keys and wrong principals,
each against tasks, bids and executions in the state that provokes it (see
conftest.py; the ledger checks every refused call left the tables as they were).
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from marketplace.bids.v1 import bids_pb2
from marketplace.common.v1 import common_pb2
from marketplace.execution.v1 import execution_pb2
from robustness_support import ALICE, Services, assert_healthy, new_id, ok
from robustness_world import (
    DENIED,
    FP,
    INVALID,
    NOT_FOUND,
    OK,
    REUSED,
    Case,
    World,
    money,
    run_cases,
)

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_transitions_from_wrong_states_are_failed_precondition(
    services: Services, world: World
) -> None:
    cases: list[Case] = []
    for state in ("ACCEPTED", "WITHDRAWN", "REJECTED"):
        bid_id = await world.bid(state)
        cases += [
            Case(f"withdraw {state}", "WithdrawBid",
                 bids_pb2.WithdrawBidRequest(bid_id=bid_id, event_id=new_id()), "agent",
                 FP, "BID_NOT_PENDING"),
            Case(f"accept {state}", "AcceptBid",
                 bids_pb2.AcceptBidRequest(bid_id=bid_id, event_id=new_id(), client_email=ALICE,
                                           title="t"), "client", FP, "BID_NOT_PENDING"),
            Case(f"reject {state}", "RejectBid",
                 bids_pb2.RejectBidRequest(bid_id=bid_id, event_id=new_id()), "client",
                 FP, "BID_NOT_PENDING"),
        ]  # fmt: skip
    tasks = {state: await world.task(state) for state in ("PENDING", "PROCESSING", "COMPLETED",
                                                          "FAILED")}  # fmt: skip
    for state, (task_id, started_by) in tasks.items():
        if state != "PENDING":
            cases += [
                Case(f"start {state}", "StartTask",
                     bids_pb2.StartTaskRequest(task_id=task_id, execution_id=new_id(),
                                               event_id=new_id()), "service",
                     FP, "TASK_NOT_PENDING"),
                # A task created without a bid: a service submits it (docs/security.md).
                Case(f"submit on {state}", "SubmitExecution",
                     execution_pb2.SubmitExecutionRequest(request_id=new_id(), task_id=task_id),
                     "service", FP, "TASK_NOT_PENDING"),
            ]  # fmt: skip
        if state != "PROCESSING":
            cases += [
                Case(f"complete {state}", "CompleteTask",
                     bids_pb2.CompleteTaskRequest(task_id=task_id, execution_id=started_by or
                                                  new_id(), event_id=new_id()), "service",
                     FP, "TASK_NOT_PROCESSING"),
                Case(f"fail {state}", "FailTask",
                     bids_pb2.FailTaskRequest(task_id=task_id, execution_id=started_by or new_id(),
                                              event_id=new_id(),
                                              error_type=common_pb2.ERROR_TYPE_TRANSIENT),
                     "service", FP, "TASK_NOT_PROCESSING"),
            ]  # fmt: skip
        if state != "COMPLETED":
            cases.append(
                Case(f"delivery token for {state}", "CreateDeliveryToken",
                     bids_pb2.CreateDeliveryTokenRequest(task_id=task_id), "client",
                     FP, "TASK_NOT_COMPLETED")
            )  # fmt: skip
    processing = tasks["PROCESSING"][0]
    execution_id, _ = await world.execution()
    pending_bid = await world.bid()
    cases += [
        Case("complete by another execution", "CompleteTask",
             bids_pb2.CompleteTaskRequest(task_id=processing, execution_id=new_id(),
                                          event_id=new_id(), result="x"), "service",
             FP, "EXECUTION_MISMATCH"),
        Case("fail by another execution", "FailTask",
             bids_pb2.FailTaskRequest(task_id=processing, execution_id=new_id(), event_id=new_id(),
                                      error_type=common_pb2.ERROR_TYPE_FATAL), "service",
             FP, "EXECUTION_MISMATCH"),
        Case("cancel a finished execution", "CancelExecution",
             execution_pb2.CancelExecutionRequest(execution_id=execution_id), "agent",
             FP, "EXECUTION_NOT_ACTIVE"),
        Case("second pending bid on a job", "PlaceBid",
             bids_pb2.PlaceBidRequest(request_id=new_id(), marketplace="upwork",
                                      job_id=world.job_of[pending_bid], agent_id="agent-1",
                                      amount=common_pb2.Money(currency_code="EUR", units=3)),
             "agent", grpc.StatusCode.ALREADY_EXISTS, "BID_ALREADY_ACTIVE"),
        Case("submit on an unknown task", "SubmitExecution",
             execution_pb2.SubmitExecutionRequest(request_id=new_id(), task_id=new_id()),
             "agent", NOT_FOUND, "TASK_NOT_FOUND"),
        Case("start an unknown task", "StartTask",
             bids_pb2.StartTaskRequest(task_id=new_id(), execution_id=new_id(),
                                       event_id=new_id()), "service", NOT_FOUND, "TASK_NOT_FOUND"),
        Case("withdraw an unknown bid", "WithdrawBid",
             bids_pb2.WithdrawBidRequest(bid_id=new_id(), event_id=new_id()), "agent",
             NOT_FOUND, "BID_NOT_FOUND"),
        Case("cancel an unknown execution", "CancelExecution",
             execution_pb2.CancelExecutionRequest(execution_id=new_id()), "agent",
             NOT_FOUND, "EXECUTION_NOT_FOUND"),
    ]  # fmt: skip
    await run_cases(services, cases)


async def test_reused_idempotency_keys_replay_or_are_refused(
    services: Services, world: World
) -> None:
    # The same key with the same request replays (OK, nothing changes); with
    # another request, another method or another caller it is INVALID_ARGUMENT
    # IDEMPOTENCY_KEY_REUSED naming the key, and nothing changes.
    create = bids_pb2.CreateTaskRequest(
        request_id=new_id(), client_email=ALICE, title="t", budget=money(5)
    )
    await ok(services, "CreateTask", create, "client")
    place = bids_pb2.PlaceBidRequest(
        request_id=new_id(), marketplace="upwork", job_id="reuse-job", agent_id="agent-1",
        amount=money(4),
    )  # fmt: skip
    await ok(services, "PlaceBid", place, "agent")
    bid_id = await world.bid()
    accept = bids_pb2.AcceptBidRequest(
        bid_id=bid_id, event_id=new_id(), client_email=ALICE, title="t"
    )
    await ok(services, "AcceptBid", accept, "client")
    other_bid = await world.bid()
    task_id, _ = await world.task()
    execution_id = new_id()
    start = bids_pb2.StartTaskRequest(task_id=task_id, execution_id=execution_id, event_id=new_id())
    await ok(services, "StartTask", start, "service")
    _, submit = await world.execution()

    def edit(message: Message, **changes: Any) -> Message:
        copy = type(message)()
        copy.CopyFrom(message)
        for name, value in changes.items():
            if isinstance(value, Message):
                getattr(copy, name).CopyFrom(value)
            else:
                setattr(copy, name, value)
        return copy

    loud = accept.event_id.upper()
    rid, eid = frozenset({"request_id"}), frozenset({"event_id"})
    cases = [
        Case("CreateTask repeat", "CreateTask", create, "client", OK, replay=True),
        Case("CreateTask upper-case key", "CreateTask",
             edit(create, request_id=create.request_id.upper()), "client", OK, replay=True),
        Case("CreateTask other title", "CreateTask", edit(create, title="u"), "client",
             INVALID, REUSED, rid),
        Case("CreateTask by admin", "CreateTask", create, "admin", INVALID, REUSED, rid),
        Case("PlaceBid repeat", "PlaceBid", place, "agent", OK, replay=True),
        Case("PlaceBid other amount", "PlaceBid", edit(place, amount=money(5)), "agent",
             INVALID, REUSED, rid),
        Case("PlaceBid other job", "PlaceBid", edit(place, job_id="reuse-job-2"), "agent",
             INVALID, REUSED, rid),
        Case("AcceptBid repeat", "AcceptBid", accept, "client", OK, replay=True),
        Case("AcceptBid upper-case key", "AcceptBid", edit(accept, event_id=loud), "client",
             OK, replay=True),
        Case("AcceptBid other title", "AcceptBid", edit(accept, title="u"), "client",
             INVALID, REUSED, eid),
        Case("AcceptBid key on another bid", "AcceptBid", edit(accept, bid_id=other_bid),
             "client", INVALID, REUSED, eid),
        Case("AcceptBid key to withdraw", "WithdrawBid",
             bids_pb2.WithdrawBidRequest(bid_id=other_bid, event_id=accept.event_id), "agent",
             INVALID, REUSED, eid),
        Case("AcceptBid key to reject", "RejectBid",
             bids_pb2.RejectBidRequest(bid_id=bid_id, event_id=accept.event_id), "client",
             INVALID, REUSED, eid),
        Case("AcceptBid key to start a task", "StartTask",
             bids_pb2.StartTaskRequest(task_id=task_id, execution_id=execution_id,
                                       event_id=accept.event_id), "service",
             INVALID, REUSED, eid),
        Case("StartTask repeat", "StartTask", start, "service", OK, replay=True),
        Case("StartTask other execution", "StartTask", edit(start, execution_id=new_id()),
             "service", INVALID, REUSED, eid),
        Case("StartTask key to complete", "CompleteTask",
             bids_pb2.CompleteTaskRequest(task_id=task_id, execution_id=execution_id,
                                          event_id=start.event_id, result="r"), "service",
             INVALID, REUSED, eid),
        Case("StartTask key to fail", "FailTask",
             bids_pb2.FailTaskRequest(task_id=task_id, execution_id=execution_id,
                                      event_id=start.event_id,
                                      error_type=common_pb2.ERROR_TYPE_PERMANENT), "service",
             INVALID, REUSED, eid),
        Case("StartTask key to withdraw", "WithdrawBid",
             bids_pb2.WithdrawBidRequest(bid_id=other_bid, event_id=start.event_id), "agent",
             INVALID, REUSED, eid),
        Case("SubmitExecution repeat", "SubmitExecution", submit, "agent", OK, replay=True),
        Case("SubmitExecution other prompt", "SubmitExecution", edit(submit, prompt="p"),
             "agent", INVALID, REUSED, rid),
        Case("SubmitExecution other task", "SubmitExecution", edit(submit, task_id=task_id),
             "agent", INVALID, REUSED, rid),
        Case("SubmitExecution other budget", "SubmitExecution", edit(submit, max_attempts=2),
             "agent", INVALID, REUSED, rid),
    ]  # fmt: skip
    await run_cases(services, cases)


async def test_wrong_principals_are_refused_and_change_nothing(
    services: Services, world: World
) -> None:
    bid_id = await world.bid()
    task_id, _ = await world.task()
    processing, started_by = await world.task("PROCESSING")
    completed, _ = await world.task("COMPLETED")
    token = await world.delivery_token(completed)
    execution_id, submit = await world.execution()
    pending_for_submit, _ = await world.task()
    withdraw = bids_pb2.WithdrawBidRequest(bid_id=bid_id, event_id=new_id())
    accept = bids_pb2.AcceptBidRequest(
        bid_id=bid_id, event_id=new_id(), client_email=ALICE, title="t"
    )
    reject = bids_pb2.RejectBidRequest(bid_id=bid_id, event_id=new_id())
    start = bids_pb2.StartTaskRequest(task_id=task_id, execution_id=new_id(), event_id=new_id())
    complete = bids_pb2.CompleteTaskRequest(
        task_id=processing, execution_id=started_by, event_id=new_id(), result="r"
    )
    fail = bids_pb2.FailTaskRequest(
        task_id=processing, execution_id=started_by, event_id=new_id(),
        error_type=common_pb2.ERROR_TYPE_PERMANENT,
    )  # fmt: skip
    place = bids_pb2.PlaceBidRequest(
        request_id=new_id(), marketplace="upwork", job_id="principal-job", agent_id="agent-1",
        amount=money(1),
    )  # fmt: skip
    create = bids_pb2.CreateTaskRequest(
        request_id=new_id(), client_email=ALICE, title="t", budget=money(1)
    )
    delivery = bids_pb2.CreateDeliveryTokenRequest(task_id=completed)
    submit_new = execution_pb2.SubmitExecutionRequest(
        request_id=new_id(), task_id=pending_for_submit
    )
    cancel = execution_pb2.CancelExecutionRequest(execution_id=execution_id)
    complete_llm = execution_pb2.CompleteRequest(prompt="hi")
    denied: list[tuple[str, Message, list[str]]] = [
        ("AcceptBid", accept, ["bob", "agent", "service"]),
        ("RejectBid", reject, ["agent", "service"]),
        ("PlaceBid", place, ["agent2", "client", "service"]),
        ("CreateTask", create, ["bob", "agent", "service"]),
        ("StartTask", start, ["client", "agent"]),
        ("CompleteTask", complete, ["client", "agent"]),
        ("FailTask", fail, ["client", "agent"]),
        ("ListTasks", bids_pb2.ListTasksRequest(client_email=ALICE), ["bob", "agent"]),
        ("ListBids", bids_pb2.ListBidsRequest(agent_id="agent-1"), ["agent2", "service"]),
        ("SubmitExecution", submit_new, ["client", "bob"]),
        ("Complete", complete_llm, ["client"]),
    ]
    cases = [
        Case(f"{name} as {who}", name, request, who, DENIED)
        for name, request, callers in denied
        for who in callers
    ]
    cases += [
        Case(f"{name} as {who}", name, request, who, grpc.StatusCode.UNAUTHENTICATED)
        for name, request, _ in denied
        for who in ("anonymous", "forged")
    ]
    get_delivery = bids_pb2.GetDeliveryRequest(token=token)
    cases += [
        Case(f"GetDelivery as {who}", "GetDelivery", get_delivery, who, NOT_FOUND,
             "DELIVERY_NOT_FOUND")
        for who in ("bob", "agent", "service")
    ]  # fmt: skip
    cases.append(Case("GetDelivery as alice", "GetDelivery", get_delivery, "client", OK))
    # Not the owner of a stored task or bid: the NOT_FOUND of an unknown id (docs/security.md).
    not_yours: list[tuple[str, Message, list[str], str]] = [
        ("WithdrawBid", withdraw, ["agent2", "client", "service"], "BID_NOT_FOUND"),
        ("GetBid", bids_pb2.GetBidRequest(bid_id=bid_id), ["agent2", "service"], "BID_NOT_FOUND"),
        (
            "ListBidEvents",
            bids_pb2.ListBidEventsRequest(bid_id=bid_id),
            ["agent2"],
            "BID_NOT_FOUND",
        ),
        ("GetTask", bids_pb2.GetTaskRequest(task_id=task_id), ["bob", "agent"], "TASK_NOT_FOUND"),
        (
            "ListTaskEvents",
            bids_pb2.ListTaskEventsRequest(task_id=task_id),
            ["bob", "agent"],
            "TASK_NOT_FOUND",
        ),
        ("CreateDeliveryToken", delivery, ["bob", "agent", "service"], "TASK_NOT_FOUND"),
    ]
    cases += [
        Case(f"{name} as {who}", name, request, who, NOT_FOUND, reason)
        for name, request, callers, reason in not_yours
        for who in callers
    ]
    cases += [
        Case(f"{name} as {who}", name, request, who, grpc.StatusCode.UNAUTHENTICATED)
        for name, request, _, _ in not_yours
        for who in ("anonymous", "forged")
    ]
    # Not the execution's owner (alice's task, won by agent-1): the NOT_FOUND of an unknown id.
    get_execution = execution_pb2.GetExecutionRequest(execution_id=execution_id)
    cases += [
        Case(f"{name} as {who}", name, request, who, NOT_FOUND, "EXECUTION_NOT_FOUND")
        for name, request in (("CancelExecution", cancel), ("GetExecution", get_execution))
        for who in ("bob", "agent2", "service")
    ]
    cases += [
        Case("SubmitExecution by another agent", "SubmitExecution",
             execution_pb2.SubmitExecutionRequest(request_id=new_id(),
                                                  task_id=await world.won_task()),
             "agent2", NOT_FOUND, "TASK_NOT_FOUND"),
    ]  # fmt: skip
    cases.append(Case("SubmitExecution repeat as client", "SubmitExecution", submit, "client",
                      DENIED))  # fmt: skip
    await run_cases(services, cases)


async def test_services_still_healthy_after_refused_requests(services: Services) -> None:
    # Last in the module: every refused request above was sent (per backend) by now.
    await assert_healthy(services)
