"""The whole bid-to-delivery path over real gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bids_support import (
    AGENT,
    ALICE,
    Harness,
    accept_request,
    completed_task,
    execute,
    new_id,
    place_bid_request,
)
from google.protobuf.duration_pb2 import Duration
from marketplace.bids.v1 import bids_pb2
from marketplace.common.v1 import common_pb2


async def test_bid_to_delivery_path(bids: Harness) -> None:
    agent, alice, service = bids.as_("agent"), bids.as_("alice"), bids.as_("service")

    placed = (await agent.PlaceBid(place_bid_request())).bid
    assert placed.status == bids_pb2.BID_STATUS_PENDING
    assert placed.agent_id == AGENT

    accepted = await alice.AcceptBid(accept_request(placed.bid_id))
    assert accepted.bid.status == bids_pb2.BID_STATUS_ACCEPTED
    assert accepted.event.previous_status == bids_pb2.BID_STATUS_PENDING
    assert accepted.event.new_status == bids_pb2.BID_STATUS_ACCEPTED
    task = accepted.task
    assert task.bid_id == placed.bid_id
    assert task.budget == placed.amount
    assert task.client_email == ALICE
    assert task.status == bids_pb2.TASK_STATUS_PENDING

    execution_id = new_id()
    started = await service.StartTask(
        bids_pb2.StartTaskRequest(
            task_id=task.task_id, execution_id=execution_id, event_id=new_id()
        )
    )
    assert started.task.status == bids_pb2.TASK_STATUS_PROCESSING
    completed = await service.CompleteTask(
        bids_pb2.CompleteTaskRequest(
            task_id=task.task_id, execution_id=execution_id, event_id=new_id(), result="done!"
        )
    )
    assert completed.task.status == bids_pb2.TASK_STATUS_COMPLETED
    assert completed.task.error_type == common_pb2.ERROR_TYPE_UNSPECIFIED

    issued = await alice.CreateDeliveryToken(
        bids_pb2.CreateDeliveryTokenRequest(task_id=task.task_id, ttl=Duration(seconds=600))
    )
    assert len(issued.token) >= 43  # 256 bits, URL-safe base64

    delivery = (await alice.GetDelivery(bids_pb2.GetDeliveryRequest(token=issued.token))).delivery
    assert delivery.task_id == task.task_id
    assert delivery.client_email == ALICE
    assert delivery.result == "done!"
    assert delivery.amount == placed.amount
    assert delivery.delivered_at == completed.task.updated_at

    events = await alice.ListBidEvents(bids_pb2.ListBidEventsRequest(bid_id=placed.bid_id))
    assert [e.event_id for e in events.events] == [accepted.event.event_id]


async def test_delivery_completed_by_a_replica_whose_clock_is_ahead(bids: Harness) -> None:
    task, _ = await completed_task(bids)
    ahead = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    # The replica that completed the task stamped updated_at an hour ahead of ours.
    # (SQLite holds naive UTC text in SQLAlchemy's format.)
    stamp = ahead if "postgresql" in bids.url else f"{ahead:%Y-%m-%d %H:%M:%S.%f}"
    sql = "UPDATE tasks SET updated_at = :t WHERE task_id = :id"
    await execute(bids.url, sql, t=stamp, id=task.task_id)
    issued = await bids.as_("alice").CreateDeliveryToken(
        bids_pb2.CreateDeliveryTokenRequest(task_id=task.task_id)
    )
    reply = await bids.as_("alice").GetDelivery(bids_pb2.GetDeliveryRequest(token=issued.token))
    assert reply.delivery.delivered_at.ToDatetime(tzinfo=UTC) == ahead
