"""Races between two server instances on one database (PostgreSQL and SQLite).

Invariants, not just "no exception": exactly one transition, exactly one
audit event, losers answer FAILED_PRECONDITION BID_NOT_PENDING, replays of
one event_id all return the stored answer, one PENDING bid per job and agent.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from bids_support import (
    Caller,
    Harness,
    accept_request,
    close_harness,
    details,
    new_id,
    open_harness,
    place_bid_request,
    scalar,
)
from marketplace.bids.v1 import bids_pb2

pytestmark = pytest.mark.slow


@pytest.fixture
async def pair(db_url: str) -> AsyncIterator[tuple[Harness, Harness]]:
    """Two server instances on the same database."""
    first = await open_harness(db_url)
    second = await open_harness(db_url)
    try:
        yield first, second
    finally:
        await close_harness(first)
        await close_harness(second)


async def _outcomes(calls: list[Any]) -> tuple[list[Any], list[grpc.aio.AioRpcError]]:
    results = await asyncio.gather(*calls, return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    unexpected = [r for r in results if isinstance(r, BaseException) and r not in failed]
    assert not unexpected, unexpected
    return ok, failed


async def _place(caller: Caller, **kw: Any) -> bids_pb2.Bid:
    reply: bids_pb2.PlaceBidResponse = await caller.PlaceBid(place_bid_request(**kw))
    return reply.bid


async def test_withdraw_racing_accept_makes_exactly_one_transition(
    pair: tuple[Harness, Harness],
) -> None:
    first, second = pair
    bid = await _place(first.as_("agent"), job_id="race-1")
    calls = []
    for i in range(30):
        server = first if i % 2 else second
        calls.append(
            server.as_("agent").WithdrawBid(
                bids_pb2.WithdrawBidRequest(bid_id=bid.bid_id, event_id=new_id(), reason="race")
            )
        )
        calls.append(server.as_("alice").AcceptBid(accept_request(bid.bid_id)))
    ok, failed = await _outcomes(calls)

    assert len(ok) == 1
    assert len(failed) == 59
    reasons = Counter((d.code, d.info.reason) for d in map(details, failed))
    assert reasons == {(grpc.StatusCode.FAILED_PRECONDITION, "BID_NOT_PENDING"): 59}
    url = first.url
    events = await scalar(url, "SELECT count(*) FROM bid_events WHERE bid_id = :b", b=bid.bid_id)
    assert events == 1
    winner = ok[0].bid.status
    tasks = await scalar(url, "SELECT count(*) FROM tasks WHERE bid_id = :b", b=bid.bid_id)
    assert tasks == (1 if winner == bids_pb2.BID_STATUS_ACCEPTED else 0)
    status = await scalar(url, "SELECT status FROM bids WHERE bid_id = :b", b=bid.bid_id)
    assert status == bids_pb2.BidStatus.Name(winner).removeprefix("BID_STATUS_")


async def test_repeated_event_id_replays_the_stored_answer(pair: tuple[Harness, Harness]) -> None:
    first, second = pair
    bid = await _place(first.as_("agent"), job_id="race-2")
    request = accept_request(bid.bid_id)
    calls = [(first if i % 2 else second).as_("alice").AcceptBid(request) for i in range(20)]
    ok, failed = await _outcomes(calls)

    assert not failed
    assert len({r.SerializeToString(deterministic=True) for r in ok}) == 1
    url = first.url
    assert await scalar(url, "SELECT count(*) FROM bid_events WHERE bid_id = :b", b=bid.bid_id) == 1
    assert await scalar(url, "SELECT count(*) FROM tasks WHERE bid_id = :b", b=bid.bid_id) == 1


async def test_concurrent_place_bid_leaves_exactly_one_pending_bid(
    pair: tuple[Harness, Harness],
) -> None:
    first, second = pair
    calls = [
        (first if i % 2 else second).as_("agent").PlaceBid(place_bid_request(job_id="race-3"))
        for i in range(20)
    ]
    ok, failed = await _outcomes(calls)

    assert len(ok) == 1
    reasons = Counter((d.code, d.info.reason) for d in map(details, failed))
    assert reasons == {(grpc.StatusCode.ALREADY_EXISTS, "BID_ALREADY_ACTIVE"): 19}
    pending = await scalar(
        first.url,
        "SELECT count(*) FROM bids WHERE job_id = 'race-3' AND status = 'PENDING'",
    )
    assert pending == 1


async def test_concurrent_place_bid_with_one_request_id_returns_one_bid(
    pair: tuple[Harness, Harness],
) -> None:
    first, second = pair
    request = place_bid_request(job_id="race-4")
    calls = [(first if i % 2 else second).as_("agent").PlaceBid(request) for i in range(20)]
    ok, failed = await _outcomes(calls)

    assert not failed
    assert len({r.bid.bid_id for r in ok}) == 1
    assert await scalar(first.url, "SELECT count(*) FROM bids WHERE job_id = 'race-4'") == 1


async def test_one_event_id_on_two_bids_at_once_is_used_once(
    pair: tuple[Harness, Harness],
) -> None:
    """The transition's savepoint and replay path: the loser's idempotency insert collides,
    its savepoint rolls back alone, and it answers IDEMPOTENCY_KEY_REUSED (never INTERNAL
    or ABORTED); exactly one of the two bids moves and one event is written."""
    first, second = pair
    rounds = 10
    calls, bid_pairs = [], []
    for i in range(rounds):
        a = await _place(first.as_("agent"), job_id=f"shared-{i}-a")
        b = await _place(first.as_("agent"), job_id=f"shared-{i}-b")
        event_id = new_id()
        bid_pairs.append((a.bid_id, b.bid_id))
        for harness, bid in ((first, a), (second, b)):
            request = bids_pb2.WithdrawBidRequest(bid_id=bid.bid_id, event_id=event_id)
            calls.append(harness.as_("agent").WithdrawBid(request))
    ok, failed = await _outcomes(calls)
    reasons = Counter((d.code, d.info.reason) for d in map(details, failed))
    assert len(ok) == rounds
    assert reasons == {(grpc.StatusCode.INVALID_ARGUMENT, "IDEMPOTENCY_KEY_REUSED"): rounds}
    for a_id, b_id in bid_pairs:
        withdrawn = await scalar(
            first.url,
            "SELECT count(*) FROM bids WHERE bid_id IN (:a, :b) AND status = 'WITHDRAWN'",
            a=a_id,
            b=b_id,
        )
        events = await scalar(
            first.url, "SELECT count(*) FROM bid_events WHERE bid_id IN (:a, :b)", a=a_id, b=b_id
        )
        assert (withdrawn, events) == (1, 1)
