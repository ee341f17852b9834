"""Keyset pagination over a real channel: complete, ordered, stable under concurrent inserts."""

from __future__ import annotations

import asyncio

from bids_support import AGENT, ALICE, Harness, create_task_request, new_id, place_bid_request
from marketplace.bids.v1 import bids_pb2


async def test_task_pages_are_stable_while_new_tasks_arrive(bids: Harness) -> None:
    alice = bids.as_("alice")
    before = [(await alice.CreateTask(create_task_request(ALICE))).task for _ in range(23)]
    seen: list[bids_pb2.Task] = []
    token = ""
    while True:
        # New tasks land between (and during) page fetches; they are newer than the
        # cursor, so a keyset walk neither repeats nor skips the older rows.
        inserts = [alice.CreateTask(create_task_request(ALICE)) for _ in range(3)]
        page, *_ = await asyncio.gather(
            alice.ListTasks(bids_pb2.ListTasksRequest(page_size=5, page_token=token)), *inserts
        )
        seen.extend(page.tasks)
        token = page.next_page_token
        if not token:
            break
    ids = [t.task_id for t in seen]
    assert len(ids) == len(set(ids))
    assert {t.task_id for t in before} <= set(ids)
    keys = [(t.created_at.ToDatetime(), t.task_id) for t in seen]
    assert keys == sorted(keys, reverse=True)


async def test_bid_pages_cover_every_bid_once_newest_first(bids: Harness) -> None:
    agent = bids.as_("agent")
    placed = [(await agent.PlaceBid(place_bid_request(job_id=f"j{i}"))).bid for i in range(12)]
    seen: list[bids_pb2.Bid] = []
    token = ""
    while True:
        page = await agent.ListBids(
            bids_pb2.ListBidsRequest(agent_id=AGENT, page_size=5, page_token=token)
        )
        seen.extend(page.bids)
        token = page.next_page_token
        if not token:
            break
    assert [b.bid_id for b in seen] == [b.bid_id for b in reversed(placed)]


async def test_page_size_zero_means_fifty(bids: Harness) -> None:
    agent = bids.as_("agent")
    for i in range(51):
        await agent.PlaceBid(place_bid_request(job_id=f"k{i}"))
    page = await agent.ListBids(bids_pb2.ListBidsRequest())
    assert len(page.bids) == 50
    assert page.next_page_token


async def test_bid_events_list_oldest_first(bids: Harness) -> None:
    agent = bids.as_("agent")
    bid = (await agent.PlaceBid(place_bid_request())).bid
    event_id = new_id()
    await agent.WithdrawBid(bids_pb2.WithdrawBidRequest(bid_id=bid.bid_id, event_id=event_id))
    events = await agent.ListBidEvents(bids_pb2.ListBidEventsRequest(bid_id=bid.bid_id))
    assert [(e.event_id, e.previous_status, e.new_status, e.actor) for e in events.events] == [
        (event_id, bids_pb2.BID_STATUS_PENDING, bids_pb2.BID_STATUS_WITHDRAWN, f"agent:{AGENT}")
    ]
    assert events.next_page_token == ""
