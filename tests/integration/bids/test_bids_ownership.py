"""Ownership over a real channel: who may see and change what."""

from __future__ import annotations

import grpc
from bids_support import (
    AGENT,
    ALICE,
    BOB,
    OTHER_AGENT,
    Details,
    Harness,
    accept_request,
    completed_task,
    create_task_request,
    expect_error,
    new_id,
    place_bid_request,
    start_request,
)
from marketplace.bids.v1 import bids_pb2

DENIED = grpc.StatusCode.PERMISSION_DENIED


def assert_denied(d: Details) -> None:
    """PERMISSION_DENIED with exactly one ErrorInfo of the bids domain, type PERMANENT."""
    assert (d.code, d.info.reason, d.info.domain) == (
        DENIED,
        "PERMISSION_DENIED",
        "bids.marketplace",
    )
    assert (d.info_count, d.info.metadata["errorType"]) == (1, "PERMANENT")
    assert d.retry is None


def assert_like_unknown(d: Details, d_id: str, unknown: Details, unknown_id: str) -> None:
    """NOT_FOUND exactly as for an unknown id: code, reason, message and metadata
    (with the id in place), so a stranger learns neither existence nor owner."""
    assert d.code == grpc.StatusCode.NOT_FOUND
    assert d.info.reason == unknown.info.reason
    assert d.message.replace(d_id, "<id>") == unknown.message.replace(unknown_id, "<id>")
    meta = {k: v.replace(d_id, "<id>") for k, v in d.info.metadata.items()}
    assert meta == {k: v.replace(unknown_id, "<id>") for k, v in unknown.info.metadata.items()}
    assert ALICE not in d.message
    assert AGENT not in d.message


async def test_agent_cannot_withdraw_another_agents_bid(bids: Harness) -> None:
    bid = (await bids.as_("agent").PlaceBid(place_bid_request())).bid
    unknown_id = new_id()
    for who in ("other_agent", "alice", "service"):
        withdraw = bids_pb2.WithdrawBidRequest(bid_id=bid.bid_id, event_id=new_id())
        d = await expect_error(bids.as_(who).WithdrawBid(withdraw))
        unknown = await expect_error(
            bids.as_(who).WithdrawBid(
                bids_pb2.WithdrawBidRequest(bid_id=unknown_id, event_id=new_id())
            )
        )
        assert_like_unknown(d, bid.bid_id, unknown, unknown_id)
    got = await bids.as_("agent").GetBid(bids_pb2.GetBidRequest(bid_id=bid.bid_id))
    assert got.bid.status == bids_pb2.BID_STATUS_PENDING


async def test_another_agents_bid_looks_unknown(bids: Harness) -> None:
    bid = (await bids.as_("agent").PlaceBid(place_bid_request())).bid
    unknown_id = new_id()
    for who in ("other_agent", "service"):
        caller = bids.as_(who)
        for rpc, request in (
            (caller.GetBid, bids_pb2.GetBidRequest),
            (caller.ListBidEvents, bids_pb2.ListBidEventsRequest),
        ):
            d = await expect_error(rpc(request(bid_id=bid.bid_id)))
            unknown = await expect_error(rpc(request(bid_id=unknown_id)))
            assert_like_unknown(d, bid.bid_id, unknown, unknown_id)


async def test_another_clients_task_looks_unknown(bids: Harness) -> None:
    task = (await bids.as_("alice").CreateTask(create_task_request(ALICE))).task
    unknown_id = new_id()
    for who in ("bob", "agent"):
        caller = bids.as_(who)
        for rpc, request in (
            (caller.GetTask, bids_pb2.GetTaskRequest),
            (caller.ListTaskEvents, bids_pb2.ListTaskEventsRequest),
        ):
            d = await expect_error(rpc(request(task_id=task.task_id)))
            unknown = await expect_error(rpc(request(task_id=unknown_id)))
            assert_like_unknown(d, task.task_id, unknown, unknown_id)


async def test_agent_cannot_bid_as_another_agent(bids: Harness) -> None:
    d = await expect_error(bids.as_("agent").PlaceBid(place_bid_request(agent=OTHER_AGENT)))
    assert_denied(d)


async def test_agent_cannot_accept_bids(bids: Harness) -> None:
    bid = (await bids.as_("agent").PlaceBid(place_bid_request())).bid
    d = await expect_error(bids.as_("agent").AcceptBid(accept_request(bid.bid_id)))
    assert_denied(d)


async def test_client_accepts_only_for_itself(bids: Harness) -> None:
    bid = (await bids.as_("agent").PlaceBid(place_bid_request())).bid
    d = await expect_error(bids.as_("bob").AcceptBid(accept_request(bid.bid_id, client=ALICE)))
    assert_denied(d)


async def test_client_cannot_create_a_task_for_another_client(bids: Harness) -> None:
    d = await expect_error(bids.as_("bob").CreateTask(create_task_request(ALICE)))
    assert_denied(d)


async def test_client_lists_only_its_own_tasks(bids: Harness) -> None:
    await bids.as_("alice").CreateTask(create_task_request(ALICE))
    await bids.as_("bob").CreateTask(create_task_request(BOB))
    mine = await bids.as_("bob").ListTasks(bids_pb2.ListTasksRequest())
    assert [t.client_email for t in mine.tasks] == [BOB]
    d = await expect_error(bids.as_("bob").ListTasks(bids_pb2.ListTasksRequest(client_email=ALICE)))
    assert_denied(d)


async def test_admin_and_service_see_every_task(bids: Harness) -> None:
    await bids.as_("alice").CreateTask(create_task_request(ALICE))
    await bids.as_("bob").CreateTask(create_task_request(BOB))
    for who in ("admin", "service"):
        listed = await bids.as_(who).ListTasks(bids_pb2.ListTasksRequest())
        assert {t.client_email for t in listed.tasks} == {ALICE, BOB}


async def test_agent_lists_only_its_own_bids(bids: Harness) -> None:
    await bids.as_("agent").PlaceBid(place_bid_request())
    await bids.as_("other_agent").PlaceBid(place_bid_request(agent=OTHER_AGENT))
    mine = await bids.as_("other_agent").ListBids(bids_pb2.ListBidsRequest())
    assert [b.agent_id for b in mine.bids] == [OTHER_AGENT]


async def test_only_the_service_moves_tasks(bids: Harness) -> None:
    task = (await bids.as_("alice").CreateTask(create_task_request())).task
    for who in ("alice", "agent"):
        d = await expect_error(bids.as_(who).StartTask(start_request(task.task_id)))
        assert_denied(d)


async def test_only_the_tasks_client_gets_a_delivery_token(bids: Harness) -> None:
    task, _ = await completed_task(bids, client="alice")
    request = bids_pb2.CreateDeliveryTokenRequest(task_id=task.task_id)
    unknown_id = new_id()
    for who in ("bob", "agent", "service"):
        d = await expect_error(bids.as_(who).CreateDeliveryToken(request))
        unknown = await expect_error(
            bids.as_(who).CreateDeliveryToken(
                bids_pb2.CreateDeliveryTokenRequest(task_id=unknown_id)
            )
        )
        assert_like_unknown(d, task.task_id, unknown, unknown_id)
    assert (await bids.as_("alice").CreateDeliveryToken(request)).token


async def test_only_the_tasks_client_redeems_its_delivery_token(bids: Harness) -> None:
    task, _ = await completed_task(bids, client="alice")
    issued = await bids.as_("alice").CreateDeliveryToken(
        bids_pb2.CreateDeliveryTokenRequest(task_id=task.task_id)
    )
    redeem = bids_pb2.GetDeliveryRequest(token=issued.token)
    unknown = await expect_error(
        bids.as_("bob").GetDelivery(bids_pb2.GetDeliveryRequest(token=issued.token + "x"))
    )
    for who in ("bob", "agent", "service"):
        d = await expect_error(bids.as_(who).GetDelivery(redeem))
        # The same answer as for an unknown token: a leaked token reveals nothing.
        assert (d.code, d.info.reason) == (grpc.StatusCode.NOT_FOUND, "DELIVERY_NOT_FOUND")
        assert (d.message, d.info.metadata) == (unknown.message, unknown.info.metadata)
    for who in ("alice", "admin"):
        assert (await bids.as_(who).GetDelivery(redeem)).delivery.task_id == task.task_id
