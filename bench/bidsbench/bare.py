"""The bare server: the physical limit of this stack (grpc.aio + uvloop + asyncpg) here.

A ``grpc.aio`` BidService servicer that answers GetBid, ListBids, PlaceBid and
WithdrawBid with the bids service's own SQL on the same migrated schema, over
an asyncpg pool, and nothing else: no auth, no validation, no logging, no
metrics, no ORM, no interceptors. The writes do what the service's writes do
in PostgreSQL (the lock, the savepoint, the event row and the idempotency row
with its fingerprint and stored response), so the difference between the two
servers is exactly the service's own code.

It runs as a subprocess (``bench/bids_bench.py --serve-bare URL``), like the
service instances, so each server has an interpreter and a GIL of its own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from marketplace.common.v1 import common_pb2
from marketplace_common.pg_admin import asyncpg_dsn

from bidsbench.lag import LoopLag
from bidsbench.statements import (
    INSERT_BID,
    INSERT_EVENT,
    INSERT_KEY,
    LIST_BIDS_BY_AGENT,
    SELECT_BID,
    SELECT_BID_LOCKED,
    SELECT_KEY,
    SELECT_PENDING,
    SET_LOCK_TIMEOUT,
    UPDATE_BID,
)

Context = grpc.aio.ServicerContext[Any, Any]
_STATUS: dict[str, Any] = {
    "PENDING": bids_pb2.BID_STATUS_PENDING,
    "WITHDRAWN": bids_pb2.BID_STATUS_WITHDRAWN,
}


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _bid(row: Any, status: str | None = None, updated_at: datetime | None = None) -> bids_pb2.Bid:
    return bids_pb2.Bid(
        bid_id=row["bid_id"],
        marketplace=row["marketplace"],
        job_id=row["job_id"],
        agent_id=row["agent_id"],
        amount=common_pb2.Money(
            currency_code=row["amount_currency"],
            units=row["amount_units"],
            nanos=row["amount_nanos"],
        ),
        proposal=row["proposal"],
        status=_STATUS[status or row["status"]],
        created_at=_timestamp(row["created_at"]),
        updated_at=_timestamp(updated_at or row["updated_at"]),
    )


def _fingerprint(method: str, request: dict[str, Any]) -> str:
    canonical = {"method": method, "actor": "agent:bare", "request": request}
    return hashlib.sha256(
        json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


class BareBidServicer(bids_pb2_grpc.BidServiceServicer):
    """Four RPCs straight onto asyncpg; anything else is UNIMPLEMENTED (the base class)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def GetBid(self, request: bids_pb2.GetBidRequest, context: Context) -> Any:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(SELECT_BID, request.bid_id)
        if row is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such bid")
        return bids_pb2.GetBidResponse(bid=_bid(row))

    async def ListBids(self, request: bids_pb2.ListBidsRequest, context: Context) -> Any:
        size = request.page_size or 50
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(LIST_BIDS_BY_AGENT, request.agent_id, size + 1)
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            cursor = f"{last['created_at'].isoformat()}|{last['bid_id']}"
            token = base64.urlsafe_b64encode(cursor.encode()).decode()
        return bids_pb2.ListBidsResponse(
            bids=[_bid(row) for row in rows[:size]], next_page_token=token
        )

    async def PlaceBid(self, request: bids_pb2.PlaceBidRequest, context: Context) -> Any:
        fields = {
            "request_id": request.request_id,
            "marketplace": request.marketplace,
            "job_id": request.job_id,
            "agent_id": request.agent_id,
            "amount": {
                "currency_code": request.amount.currency_code,
                "units": request.amount.units,
                "nanos": request.amount.nanos,
            },
            "proposal": request.proposal,
        }
        fingerprint = _fingerprint("PlaceBid", fields)
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(SET_LOCK_TIMEOUT)
            if await conn.fetchrow(SELECT_KEY, "PlaceBid", request.request_id) is not None:
                await context.abort(grpc.StatusCode.ALREADY_EXISTS, "request_id replayed")
            pending = (request.marketplace, request.job_id, request.agent_id)
            if await conn.fetchrow(SELECT_PENDING, *pending) is not None:
                await context.abort(grpc.StatusCode.ALREADY_EXISTS, "a pending bid exists")
            row = {
                "bid_id": str(uuid.uuid4()),
                "marketplace": request.marketplace,
                "job_id": request.job_id,
                "agent_id": request.agent_id,
                "amount_currency": request.amount.currency_code,
                "amount_units": request.amount.units,
                "amount_nanos": request.amount.nanos,
                "proposal": request.proposal,
                "status": "PENDING",
                "created_at": now,
                "updated_at": now,
            }
            response = json.dumps(row, default=str).encode()
            async with conn.transaction():  # the savepoint
                await conn.execute(INSERT_BID, *row.values())
                await conn.execute(
                    INSERT_KEY, "PlaceBid", request.request_id, fingerprint, response, now
                )
        return bids_pb2.PlaceBidResponse(bid=_bid(row))

    async def WithdrawBid(self, request: bids_pb2.WithdrawBidRequest, context: Context) -> Any:
        fields = {"bid_id": request.bid_id, "event_id": request.event_id, "reason": request.reason}
        fingerprint = _fingerprint("WithdrawBid", fields)
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(SET_LOCK_TIMEOUT)
            bid = await conn.fetchrow(SELECT_BID_LOCKED, request.bid_id)
            if bid is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, "no such bid")
            if await conn.fetchrow(SELECT_KEY, "event", request.event_id) is not None:
                await context.abort(grpc.StatusCode.ALREADY_EXISTS, "event_id replayed")
            if bid["status"] != "PENDING":
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "bid is not PENDING")
            event = {
                **fields,
                "previous_status": "PENDING",
                "new_status": "WITHDRAWN",
                "actor": "agent:bare",
                "created_at": now.isoformat(),
            }
            changed = {**dict(bid), "status": "WITHDRAWN", "updated_at": now}
            stored = {"bid": changed, "event": event}
            response = json.dumps({**stored, "task": None}, default=str).encode()
            async with conn.transaction():  # the savepoint
                await conn.execute(UPDATE_BID, "WITHDRAWN", now, request.bid_id)
                await conn.execute(
                    INSERT_EVENT,
                    request.event_id,
                    request.bid_id,
                    "PENDING",
                    "WITHDRAWN",
                    request.reason,
                    "agent:bare",
                    now,
                )
                await conn.execute(
                    INSERT_KEY, "event", request.event_id, fingerprint, response, now
                )
        return bids_pb2.WithdrawBidResponse(
            bid=_bid(bid, "WITHDRAWN", now),
            event=bids_pb2.BidEvent(
                event_id=request.event_id,
                bid_id=request.bid_id,
                previous_status=_STATUS["PENDING"],
                new_status=_STATUS["WITHDRAWN"],
                reason=request.reason,
                actor="agent:bare",
                created_at=_timestamp(now),
            ),
        )


async def start_bare_server(url: str, pool_size: int) -> tuple[grpc.aio.Server, int, Any]:
    """The bare server on a free loopback port: (server, port, pool)."""
    pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=pool_size, max_size=pool_size)
    server = grpc.aio.server()
    # The other RPCs stay UNIMPLEMENTED (the generated base class answers them).
    servicer = BareBidServicer(pool)  # type: ignore[abstract]
    bids_pb2_grpc.add_BidServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port, pool


__all__ = ["BareBidServicer", "LoopLag", "start_bare_server"]
