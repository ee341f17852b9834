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

DOMAIN = "bids.marketplace"


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


def _reasons(failed: list[grpc.aio.AioRpcError]) -> Counter[tuple[grpc.StatusCode, str]]:
    """(code, ErrorInfo reason) of every loser; each carries exactly one ErrorInfo of our domain."""
    decoded = [details(exc) for exc in failed]
    assert {(d.info.domain, d.info_count) for d in decoded} <= {(DOMAIN, 1)}
    return Counter((d.code, d.info.reason) for d in decoded)


async def _event_row(url: str, bid_id: str) -> str:
    """The bid's only audit event as 'event_id previous new' (fails unless exactly one)."""
    sql = (
        "SELECT event_id || ' ' || previous_status || ' ' || new_status"
        " FROM bid_events WHERE bid_id = :b"
    )
    row: str = await scalar(url, sql, b=bid_id)
    return row


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
    assert _reasons(failed) == {(grpc.StatusCode.FAILED_PRECONDITION, "BID_NOT_PENDING"): 59}
    url = first.url
    events = await scalar(url, "SELECT count(*) FROM bid_events WHERE bid_id = :b", b=bid.bid_id)
    assert events == 1
    won = ok[0]
    winner = won.bid.status
    assert winner in (bids_pb2.BID_STATUS_ACCEPTED, bids_pb2.BID_STATUS_WITHDRAWN)
    name = bids_pb2.BidStatus.Name(winner).removeprefix("BID_STATUS_")
    # The one event row is the winner's, carrying the previous status.
    assert (won.event.previous_status, won.event.new_status) == (
        bids_pb2.BID_STATUS_PENDING,
        winner,
    )
    assert await _event_row(url, bid.bid_id) == f"{won.event.event_id} PENDING {name}"
    tasks = await scalar(url, "SELECT count(*) FROM tasks WHERE bid_id = :b", b=bid.bid_id)
    if winner == bids_pb2.BID_STATUS_ACCEPTED:
        assert tasks == 1
        task_id = await scalar(url, "SELECT task_id FROM tasks WHERE bid_id = :b", b=bid.bid_id)
        assert task_id == won.task.task_id
    else:
        assert tasks == 0
    status = await scalar(url, "SELECT status FROM bids WHERE bid_id = :b", b=bid.bid_id)
    assert status == name


async def test_repeated_event_id_replays_the_stored_answer(pair: tuple[Harness, Harness]) -> None:
    first, second = pair
    bid = await _place(first.as_("agent"), job_id="race-2")
    request = accept_request(bid.bid_id)
    calls = [(first if i % 2 else second).as_("alice").AcceptBid(request) for i in range(20)]
    ok, failed = await _outcomes(calls)

    assert not failed
    assert len(ok) == 20
    assert len({r.SerializeToString(deterministic=True) for r in ok}) == 1
    reply = ok[0]
    assert reply.bid.status == bids_pb2.BID_STATUS_ACCEPTED
    assert reply.event.event_id == request.event_id
    url = first.url
    assert await _event_row(url, bid.bid_id) == f"{request.event_id} PENDING ACCEPTED"
    assert await scalar(url, "SELECT count(*) FROM tasks WHERE bid_id = :b", b=bid.bid_id) == 1
    task_id = await scalar(url, "SELECT task_id FROM tasks WHERE bid_id = :b", b=bid.bid_id)
    assert task_id == reply.task.task_id
    # A replay after the race still answers the stored reply, byte for byte.
    again = await first.as_("alice").AcceptBid(request)
    assert again.SerializeToString(deterministic=True) == reply.SerializeToString(
        deterministic=True
    )


async def test_repeated_withdraw_event_id_replays_the_stored_answer(
    pair: tuple[Harness, Harness],
) -> None:
    first, second = pair
    bid = await _place(first.as_("agent"), job_id="race-2w")
    request = bids_pb2.WithdrawBidRequest(bid_id=bid.bid_id, event_id=new_id(), reason="replay")
    calls = [(first if i % 2 else second).as_("agent").WithdrawBid(request) for i in range(20)]
    ok, failed = await _outcomes(calls)

    assert not failed
    assert len(ok) == 20
    assert len({r.SerializeToString(deterministic=True) for r in ok}) == 1
    assert ok[0].bid.status == bids_pb2.BID_STATUS_WITHDRAWN
    assert ok[0].event.event_id == request.event_id
    assert await _event_row(first.url, bid.bid_id) == f"{request.event_id} PENDING WITHDRAWN"


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
    assert _reasons(failed) == {(grpc.StatusCode.ALREADY_EXISTS, "BID_ALREADY_ACTIVE"): 19}
    pending = await scalar(
        first.url,
        "SELECT count(*) FROM bids WHERE job_id = 'race-3' AND status = 'PENDING'",
    )
    assert pending == 1
    # The losers left no row of any status; the one row is the winner's.
    assert await scalar(first.url, "SELECT bid_id FROM bids WHERE job_id = 'race-3'") == (
        ok[0].bid.bid_id
    )


async def test_concurrent_place_bid_with_one_request_id_returns_one_bid(
    pair: tuple[Harness, Harness],
) -> None:
    first, second = pair
    request = place_bid_request(job_id="race-4")
    calls = [(first if i % 2 else second).as_("agent").PlaceBid(request) for i in range(20)]
    ok, failed = await _outcomes(calls)

    assert not failed
    assert len(ok) == 20
    assert len({r.SerializeToString(deterministic=True) for r in ok}) == 1
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
    reasons = _reasons(failed)
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
