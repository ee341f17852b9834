"""The database going away mid-request: UNAVAILABLE + RetryInfo, then recovery, no restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import grpc
import pytest
from bids_support import (
    Harness,
    close_harness,
    expect_error,
    migrate,
    new_id,
    open_harness,
    place_bid_request,
)
from marketplace.bids.v1 import bids_pb2

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg_bids(pg_url: str) -> AsyncIterator[Harness]:
    await migrate(pg_url)
    h = await open_harness(pg_url)
    try:
        yield h
    finally:
        await close_harness(h)


async def _wait_for_lock_waiter(admin: asyncpg.Connection) -> int:
    for _ in range(100):
        # Inside the holder's transaction pg_stat_activity is a snapshot taken at
        # its first read; drop it so every poll sees the backends as they are now.
        await admin.execute("SELECT pg_stat_clear_snapshot()")
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.05)
    raise AssertionError("the request never waited on the row lock")


async def test_lost_database_connection_answers_unavailable_then_recovers(
    pg_bids: Harness, pg_url: str
) -> None:
    agent = pg_bids.as_("agent")
    bid = (await agent.PlaceBid(place_bid_request())).bid
    admin = await asyncpg.connect(pg_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        holder = admin.transaction()
        await holder.start()
        # Park the request on the bid's row lock, then kill its connection (and the pool's).
        await admin.execute("SELECT 1 FROM bids WHERE bid_id = $1 FOR UPDATE", bid.bid_id)
        withdraw = bids_pb2.WithdrawBidRequest(bid_id=bid.bid_id, event_id=new_id())
        pending = asyncio.ensure_future(expect_error(agent.WithdrawBid(withdraw)))
        await _wait_for_lock_waiter(admin)
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        d = await pending
        await holder.rollback()
    finally:
        await admin.close()

    assert (d.code, d.info.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
    assert d.info.metadata["errorType"] == "TRANSIENT"
    assert d.retry is not None
    assert d.retry.retry_delay.ToTimedelta().total_seconds() > 0
    # Same server, no restart: the pool drops dead connections and the retry works.
    again = await agent.WithdrawBid(withdraw)
    assert again.bid.status == bids_pb2.BID_STATUS_WITHDRAWN
