"""Fields of requests against real objects: bad ones are named, edge ones answer
documented codes, extreme valid ones survive (see conftest.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from marketplace.bids.v1 import bids_pb2
from marketplace.common.v1 import common_pb2
from marketplace.execution.v1 import execution_pb2
from robustness_requests import INT64, edge_values
from robustness_support import ALICE, BY_NAME, MUTATING, Services, assert_healthy, new_id, ok, rpc
from robustness_world import INVALID, OK, UNKNOWN_ENUM, Case, World, run_cases

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_mixed_valid_and_invalid_fields_name_every_bad_field(
    services: Services, world: World
) -> None:
    bid_id = await world.bid()
    pending, _ = await world.task()
    processing, started_by = await world.task("PROCESSING")
    completed, _ = await world.task("COMPLETED")
    ts = Timestamp
    cases = [
        Case("AcceptBid", "AcceptBid",
             bids_pb2.AcceptBidRequest(bid_id=bid_id, event_id="not-a-uuid", client_email="no-at",
                                       title=" ", description="ok"), "admin",
             INVALID, fields=frozenset({"event_id", "client_email", "title"})),
        Case("WithdrawBid", "WithdrawBid",
             bids_pb2.WithdrawBidRequest(bid_id=bid_id, event_id="", reason="a\x00b"), "agent",
             INVALID, fields=frozenset({"event_id", "reason"})),
        Case("RejectBid", "RejectBid",
             bids_pb2.RejectBidRequest(bid_id=bid_id, event_id=new_id(), reason="A" * 1_001),
             "client", INVALID, fields=frozenset({"reason"})),
        Case("StartTask", "StartTask",
             bids_pb2.StartTaskRequest(task_id=pending, execution_id="x", event_id=new_id()),
             "service", INVALID, fields=frozenset({"execution_id"})),
        Case("CompleteTask NUL", "CompleteTask",
             bids_pb2.CompleteTaskRequest(task_id=processing, execution_id=started_by,
                                          event_id="{x}", result="a\x00b"), "service",
             INVALID, fields=frozenset({"event_id", "result"})),
        Case("CompleteTask too long", "CompleteTask",
             bids_pb2.CompleteTaskRequest(task_id=processing, execution_id=started_by,
                                          event_id=new_id(), result="é" * 100_001), "service",
             INVALID, fields=frozenset({"result"})),
        Case("FailTask", "FailTask",
             bids_pb2.FailTaskRequest(task_id=processing, execution_id=started_by,
                                      event_id=new_id(), error_type=UNKNOWN_ENUM,
                                      message="A" * 10_001),
             "service", INVALID, fields=frozenset({"error_type", "message"})),
        Case("CreateDeliveryToken negative ttl", "CreateDeliveryToken",
             bids_pb2.CreateDeliveryTokenRequest(task_id=completed, ttl=Duration(seconds=-1)),
             "client", INVALID, fields=frozenset({"ttl"})),
        Case("CreateDeliveryToken long ttl, bad id", "CreateDeliveryToken",
             bids_pb2.CreateDeliveryTokenRequest(task_id=completed + "0",
                                                 ttl=Duration(seconds=86_400 * 31)),
             "client", INVALID, fields=frozenset({"task_id", "ttl"})),
        Case("CreateTask", "CreateTask",
             bids_pb2.CreateTaskRequest(request_id=new_id(), client_email="@", title="A" * 201,
                                        description="\x00",
                                        budget=common_pb2.Money(currency_code="eur")),
             "client", INVALID,
             fields=frozenset({"client_email", "title", "description", "budget"})),
        Case("PlaceBid", "PlaceBid",
             bids_pb2.PlaceBidRequest(request_id="x", marketplace=" upwork", job_id="",
                                      agent_id="agent-1",
                                      amount=common_pb2.Money(currency_code="EUR", units=1,
                                                              nanos=-1), proposal="ok"),
             "agent", INVALID,
             fields=frozenset({"request_id", "marketplace", "job_id", "amount"})),
        Case("SubmitExecution", "SubmitExecution",
             execution_pb2.SubmitExecutionRequest(request_id="x", task_id=pending,
                                                  output_schema="not json", max_attempts=11),
             "agent", INVALID,
             fields=frozenset({"request_id", "output_schema", "max_attempts"})),
        Case("ListTasks", "ListTasks",
             bids_pb2.ListTasksRequest(client_email="no-at", created_after=ts(seconds=2_000),
                                       created_before=ts(seconds=1_000), page_size=-1),
             "admin", INVALID,
             fields=frozenset({"client_email", "created_before", "page_size"})),
        Case("ListBidEvents", "ListBidEvents",
             bids_pb2.ListBidEventsRequest(bid_id=bid_id, page_size=-1, page_token="!!!"),
             "admin", INVALID, fields=frozenset({"page_size", "page_token"})),
        Case("ListExecutions", "ListExecutions",
             execution_pb2.ListExecutionsRequest(task_id="x", page_size=-1, page_token="!" * 1_001),
             "agent", INVALID, fields=frozenset({"task_id", "page_size", "page_token"})),
        Case("ListExecutions bad token", "ListExecutions",
             execution_pb2.ListExecutionsRequest(page_size=-1, page_token="!!!"), "agent",
             INVALID, fields=frozenset({"page_size", "page_token"})),
        Case("Complete", "Complete",
             execution_pb2.CompleteRequest(prompt="", output_schema="[]", max_attempts=-1),
             "agent", INVALID, fields=frozenset({"prompt", "output_schema", "max_attempts"})),
    ]  # fmt: skip
    await run_cases(services, cases)


Base = Callable[[World], Awaitable[tuple[Message, str]]]


async def _withdraw_base(world: World) -> tuple[Message, str]:
    bid_id = await world.bid()
    return bids_pb2.WithdrawBidRequest(bid_id=bid_id, event_id=new_id(), reason="r"), "agent"


async def _accept_base(world: World) -> tuple[Message, str]:
    request = bids_pb2.AcceptBidRequest(
        bid_id=await world.bid(), event_id=new_id(), client_email=ALICE, title="t", description="d"
    )
    return request, "client"


async def _reject_base(world: World) -> tuple[Message, str]:
    bid_id = await world.bid()
    return bids_pb2.RejectBidRequest(bid_id=bid_id, event_id=new_id(), reason="r"), "client"


async def _bid_events_base(world: World) -> tuple[Message, str]:
    return bids_pb2.ListBidEventsRequest(bid_id=await world.bid("WITHDRAWN")), "agent"


async def _get_bid_base(world: World) -> tuple[Message, str]:
    return bids_pb2.GetBidRequest(bid_id=await world.bid("ACCEPTED")), "agent"


async def _start_base(world: World) -> tuple[Message, str]:
    task_id, _ = await world.task()
    request = bids_pb2.StartTaskRequest(task_id=task_id, execution_id=new_id(), event_id=new_id())
    return request, "service"


async def _complete_base(world: World) -> tuple[Message, str]:
    task_id, execution_id = await world.task("PROCESSING")
    request = bids_pb2.CompleteTaskRequest(
        task_id=task_id, execution_id=execution_id, event_id=new_id(), result="r"
    )
    return request, "service"


async def _fail_base(world: World) -> tuple[Message, str]:
    task_id, execution_id = await world.task("PROCESSING")
    request = bids_pb2.FailTaskRequest(
        task_id=task_id, execution_id=execution_id, event_id=new_id(),
        error_type=common_pb2.ERROR_TYPE_TRANSIENT, message="m",
    )  # fmt: skip
    return request, "service"


async def _get_task_base(world: World) -> tuple[Message, str]:
    task_id, _ = await world.task("FAILED")
    return bids_pb2.GetTaskRequest(task_id=task_id), "client"


async def _token_base(world: World) -> tuple[Message, str]:
    task_id, _ = await world.task("COMPLETED")
    request = bids_pb2.CreateDeliveryTokenRequest(task_id=task_id, ttl=Duration(seconds=3_600))
    return request, "client"


async def _delivery_base(world: World) -> tuple[Message, str]:
    task_id, _ = await world.task("COMPLETED")
    return bids_pb2.GetDeliveryRequest(token=await world.delivery_token(task_id)), "client"


async def _submit_base(world: World) -> tuple[Message, str]:
    task_id = await world.won_task()  # agent-1 submits the task it won
    return execution_pb2.SubmitExecutionRequest(request_id=new_id(), task_id=task_id), "agent"


async def _execution_base(world: World) -> tuple[Message, str]:
    execution_id, _ = await world.execution()
    return execution_pb2.GetExecutionRequest(execution_id=execution_id), "agent"


async def _watch_base(world: World) -> tuple[Message, str]:
    execution_id, _ = await world.execution()
    return execution_pb2.WatchExecutionRequest(execution_id=execution_id), "client"


async def _cancel_base(world: World) -> tuple[Message, str]:
    execution_id, _ = await world.execution()
    return execution_pb2.CancelExecutionRequest(execution_id=execution_id), "agent"


async def _list_executions_base(world: World) -> tuple[Message, str]:
    _, submit = await world.execution()
    return execution_pb2.ListExecutionsRequest(task_id=submit.task_id, page_size=1), "service"


BASES: dict[str, Base] = {
    "WithdrawBid": _withdraw_base,
    "AcceptBid": _accept_base,
    "RejectBid": _reject_base,
    "ListBidEvents": _bid_events_base,
    "GetBid": _get_bid_base,
    "StartTask": _start_base,
    "CompleteTask": _complete_base,
    "FailTask": _fail_base,
    "GetTask": _get_task_base,
    "CreateDeliveryToken": _token_base,
    "GetDelivery": _delivery_base,
    "SubmitExecution": _submit_base,
    "GetExecution": _execution_base,
    "WatchExecution": _watch_base,
    "CancelExecution": _cancel_base,
    "ListExecutions": _list_executions_base,
}


def _id_variants(value: str) -> list[str]:
    """Spellings of a real id: some name the same object, the rest are not UUIDs."""
    return [value.upper(), "{" + value + "}", value.replace("-", ""), f"urn:uuid:{value}",
            f" {value}", f"{value}\n", f"{value}\x00", value[:-1], value + "0"]  # fmt: skip


def _swapped(base: Message, fd: FieldDescriptor, value: Any) -> Message:
    request = type(base)()
    request.CopyFrom(base)
    if value is None:
        request.ClearField(fd.name)
    elif isinstance(value, Message):
        getattr(request, fd.name).CopyFrom(value)
    else:
        setattr(request, fd.name, value)
    return request


def _real_edges(world: World, base: Message, fd: FieldDescriptor) -> list[Any]:
    values = edge_values(fd)
    if fd.type == FieldDescriptor.TYPE_STRING and fd.name != "page_token":
        own = getattr(base, fd.name)
        # The latest ids of other objects, and event_ids already used.
        values = [*values, *_id_variants(own), *world.known_ids[-8:]] if own else values
    return values


@pytest.mark.parametrize("name", sorted(BASES))
async def test_field_edges_against_real_objects_answer_documented_codes(
    services: Services, world: World, name: str
) -> None:
    # A valid request on a real object in the right state, one field at a time
    # swapped for an edge value (other spellings of its id, ids of other
    # objects, the curated edges). Only documented codes; the ledger checks that
    # refused calls change nothing. An accepted change uses up the object: the
    # next request gets a fresh one.
    method = BY_NAME[name]
    base, caller = await BASES[name](world)
    for fd in method.input_type.fields:
        for value in _real_edges(world, base, fd):
            outcome = await rpc(services, name, _swapped(base, fd, value), caller)
            if outcome.code is OK and name in MUTATING:
                base, caller = await BASES[name](world)


async def test_extreme_amounts_survive_the_whole_bid_to_delivery_path(
    services: Services, world: World
) -> None:
    # The largest Money a request may carry (int64 units, 999,999,999 nanos) goes
    # through PlaceBid, AcceptBid (the task budget), the task transitions and the
    # delivery unchanged on both backends (BIGINT/INTEGER columns, no overflow).
    largest = common_pb2.Money(currency_code="EUR", units=INT64[1], nanos=999_999_999)
    place = bids_pb2.PlaceBidRequest(
        request_id=new_id(), marketplace="upwork", job_id="max-amount", agent_id="agent-1",
        amount=largest, proposal="😀" * 2_500,
    )  # fmt: skip
    bid = bids_pb2.PlaceBidResponse.FromString(await ok(services, "PlaceBid", place, "agent")).bid
    accept = bids_pb2.AcceptBidRequest(
        bid_id=bid.bid_id, event_id=new_id(), client_email=ALICE, title="é" * 200
    )
    reply = await ok(services, "AcceptBid", accept, "client")
    task_id = bids_pb2.AcceptBidResponse.FromString(reply).task.task_id
    execution_id = new_id()
    for name, request in [
        ("StartTask", bids_pb2.StartTaskRequest(
            task_id=task_id, execution_id=execution_id, event_id=new_id())),
        ("CompleteTask", bids_pb2.CompleteTaskRequest(
            task_id=task_id, execution_id=execution_id, event_id=new_id(),
            result="\U0010ffff" * 100_000)),
    ]:  # fmt: skip
        await ok(services, name, request, "service")
    token = await world.delivery_token(task_id)
    reply = await ok(services, "GetDelivery", bids_pb2.GetDeliveryRequest(token=token), "client")
    delivery = bids_pb2.GetDeliveryResponse.FromString(reply).delivery
    assert delivery.amount == largest
    assert delivery.result == "\U0010ffff" * 100_000


async def test_services_still_healthy_after_real_object_fields(services: Services) -> None:
    # Last in the module: every request above was sent (per backend) by now.
    await assert_healthy(services)
