"""Transaction conflicts on PostgreSQL, over a real channel: a deadlock is retried inside the
service and the call succeeds; a serialization failure on every attempt answers ABORTED
TRANSACTION_CONFLICT with RetryInfo after exactly ``transaction_attempts`` tries."""

from __future__ import annotations

import asyncio

import asyncpg  # type: ignore[import-untyped]
import grpc
import pytest
from bids_support import (
    Details,
    close_harness,
    details,
    expect_error,
    migrate,
    new_id,
    open_harness,
    place_bid_request,
    scalar,
)
from marketplace.bids.v1 import bids_pb2
from sqlalchemy.engine import make_url

pytestmark = pytest.mark.postgres


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _wait_for_lock_waiter(conn: asyncpg.Connection) -> None:
    """Until another backend of this database waits on a lock (the bids transaction)."""
    for _ in range(500):
        # Inside a transaction the activity view is a snapshot: take a fresh one.
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the bids transaction never waited on the lock")


async def _withdraw_through_a_deadlock(pg_url: str, attempts: int) -> tuple[str, str, object]:
    """WithdrawBid whose first transaction deadlocks; (bid_id, event_id, reply or error)."""
    await migrate(pg_url)
    holder = await asyncpg.connect(_dsn(pg_url))
    # Detect the deadlock quickly (new sessions of this database only).
    database = make_url(pg_url).database
    await holder.execute(f"ALTER DATABASE \"{database}\" SET deadlock_timeout = '100ms'")
    # The holder never runs the deadlock check first, so the bids backend is the victim.
    await holder.execute("SET deadlock_timeout = '30s'")
    h = await open_harness(pg_url, transaction_attempts=attempts)
    try:
        bid = (await h.as_("agent").PlaceBid(place_bid_request())).bid
        event_id = new_id()
        tx = holder.transaction()
        await tx.start()
        # The holder owns the event's idempotency key: the bids transaction locks the
        # bid row, then waits on this key ...
        await holder.execute(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, response, created_at) "
            "VALUES ('event', $1, 'holder', '', now())",
            event_id,
        )
        request = bids_pb2.WithdrawBidRequest(bid_id=bid.bid_id, event_id=event_id)
        call = asyncio.ensure_future(h.as_("agent").WithdrawBid(request))
        await _wait_for_lock_waiter(holder)
        # ... and the holder now waits on the bid row: a deadlock. The bids backend
        # detects it and is the victim (40P01); this lock is granted only once its
        # first attempt rolled back.
        await holder.execute("SELECT 1 FROM bids WHERE bid_id = $1 FOR UPDATE", bid.bid_id)
        await tx.rollback()
        try:
            outcome: object = await call
        except grpc.aio.AioRpcError as exc:
            outcome = details(exc)
    finally:
        await holder.close()
        await close_harness(h)
    return bid.bid_id, event_id, outcome


async def test_deadlock_is_retried_inside_the_service(pg_url: str) -> None:
    bid_id, event_id, reply = await _withdraw_through_a_deadlock(pg_url, attempts=3)
    assert isinstance(reply, bids_pb2.WithdrawBidResponse), reply
    assert reply.bid.status == bids_pb2.BID_STATUS_WITHDRAWN
    assert reply.event.event_id == event_id
    count = "SELECT count(*) FROM bid_events WHERE bid_id = :b"
    assert await scalar(pg_url, count, b=bid_id) == 1


async def test_deadlock_without_retries_left_is_aborted_transaction_conflict(
    pg_url: str,
) -> None:
    bid_id, _, d = await _withdraw_through_a_deadlock(pg_url, attempts=1)
    assert isinstance(d, Details), d
    _assert_transaction_conflict(d)
    assert d.info.metadata["sqlstate"] == "40P01"
    status = "SELECT status FROM bids WHERE bid_id = :b"
    assert await scalar(pg_url, status, b=bid_id) == "PENDING"


def _assert_transaction_conflict(d: Details) -> None:
    assert (d.code, d.info.reason, d.info.domain) == (
        grpc.StatusCode.ABORTED,
        "TRANSACTION_CONFLICT",
        "bids.marketplace",
    )
    assert (d.info.metadata["errorType"], d.info_count) == ("TRANSIENT", 1)
    assert d.retry is not None
    assert d.retry.retry_delay.ToTimedelta().total_seconds() > 0


SERIALIZATION_FAILURE = """
CREATE SEQUENCE conflict_attempts;
CREATE FUNCTION fail_serialization() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('conflict_attempts');  -- sequences ignore rollbacks: counts attempts
    RAISE EXCEPTION 'injected conflict' USING ERRCODE = 'serialization_failure';
END $$;
CREATE TRIGGER bid_events_conflict BEFORE INSERT ON bid_events
    FOR EACH ROW EXECUTE FUNCTION fail_serialization();
"""


async def test_conflict_on_every_attempt_is_aborted_transaction_conflict(pg_url: str) -> None:
    await migrate(pg_url)
    h = await open_harness(pg_url, transaction_attempts=3)
    try:
        bid = (await h.as_("agent").PlaceBid(place_bid_request())).bid
        conn = await asyncpg.connect(_dsn(pg_url))
        try:
            await conn.execute(SERIALIZATION_FAILURE)
            d = await expect_error(
                h.as_("agent").WithdrawBid(
                    bids_pb2.WithdrawBidRequest(bid_id=bid.bid_id, event_id=new_id())
                )
            )
            attempts = await conn.fetchval("SELECT last_value FROM conflict_attempts")
        finally:
            await conn.close()
    finally:
        await close_harness(h)
    _assert_transaction_conflict(d)
    assert d.info.metadata["sqlstate"] == "40001"
    assert attempts == 3
    status = "SELECT status FROM bids WHERE bid_id = :b"
    assert await scalar(pg_url, status, b=bid.bid_id) == "PENDING"
    assert await scalar(pg_url, "SELECT count(*) FROM bid_events") == 0
