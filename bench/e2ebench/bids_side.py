"""The bids service side of the end-to-end bench: tasks made through the API (PlaceBid,
then AcceptBid), progress read from its database, and the exactly-once check
through the API (ListTasks, ListTaskEvents)."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg  # type: ignore[import-untyped]
import grpc.aio
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from marketplace.common.v1 import common_pb2
from marketplace_common.auth import hash_token

T = TypeVar("T")

AGENT, AGENT_TOKEN = "e2e-agent", "e2e-agent-token-" + "a" * 40
ADMIN, ADMIN_TOKEN = "e2e-admin", "e2e-admin-token-" + "b" * 40
SERVICE, SERVICE_TOKEN = "execution", "e2e-service-token-" + "c" * 40
AS_ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
AS_AGENT = (("authorization", f"Bearer {AGENT_TOKEN}"),)


def bids_tokens() -> str:
    return ",".join(
        [
            f"{hash_token(ADMIN_TOKEN)}=admin:{ADMIN}",
            f"{hash_token(AGENT_TOKEN)}=agent:{AGENT}",
            f"{hash_token(SERVICE_TOKEN)}=service:{SERVICE}",
        ]
    )


def execution_tokens() -> str:
    return ",".join(
        [f"{hash_token(ADMIN_TOKEN)}=admin:{ADMIN}", f"{hash_token(AGENT_TOKEN)}=agent:{AGENT}"]
    )


async def gather_limited(limit: int, jobs: list[Callable[[], Awaitable[T]]]) -> list[T]:
    """Runs every job, at most ``limit`` at a time; their results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(one(job) for job in jobs)))


async def make_tasks(target: str, count: int, client_email: str, in_flight: int = 32) -> list[str]:
    """``count`` tasks, each from a bid PlaceBid'd for the agent and accepted for the client."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = bids_pb2_grpc.BidServiceStub(channel)

        async def one() -> str:
            bid = await stub.PlaceBid(
                bids_pb2.PlaceBidRequest(
                    request_id=str(uuid.uuid4()),
                    marketplace="upwork",
                    job_id=f"e2e-{uuid.uuid4().hex}",
                    agent_id=AGENT,
                    amount=common_pb2.Money(currency_code="EUR", units=40),
                    proposal="I will do it.",
                ),
                metadata=AS_ADMIN,
                timeout=30,
            )
            accepted = await stub.AcceptBid(
                bids_pb2.AcceptBidRequest(
                    bid_id=bid.bid.bid_id,
                    event_id=str(uuid.uuid4()),
                    client_email=client_email,
                    title="Estimate",
                    description="Estimate the effort of the job.",
                ),
                metadata=AS_ADMIN,
                timeout=30,
            )
            return str(accepted.task.task_id)

        return await gather_limited(in_flight, [one] * count)


async def wait_finished(dsn: str, task_ids: list[str], limit_s: float) -> int:
    """Waits until every task of ``task_ids`` is COMPLETED or FAILED (one count query on
    the bids database every 0.1 s, on one connection); returns how many were."""
    conn = await asyncpg.connect(dsn)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        done = 0
        while loop.time() < deadline:
            done = int(
                await conn.fetchval(
                    "SELECT count(*) FROM tasks WHERE status IN ('COMPLETED', 'FAILED') "
                    "AND task_id = ANY($1::varchar[])",
                    task_ids,
                )
            )
            if done >= len(task_ids):
                break
            await asyncio.sleep(0.1)
        return done
    finally:
        await conn.close()


@dataclass
class BidsVerdict:
    """What the bids service says of the tasks after the run."""

    tasks: int
    completed: int
    """Tasks in status COMPLETED (ListTasks)."""
    completed_once: int
    """Tasks with exactly one event to COMPLETED (ListTaskEvents) and COMPLETED now."""
    completion_events: Counter[int] = field(default_factory=Counter)
    """How many tasks had 0, 1, 2, ... completion events."""
    first_start: float | None = None
    """The first StartTask's event, as the bids service stamped it (epoch seconds)."""
    last_completed: float | None = None
    """The last CompleteTask's event (epoch seconds)."""

    @property
    def exactly_once(self) -> bool:
        return self.completed_once == self.tasks


async def verify(target: str, client_email: str, task_ids: list[str]) -> BidsVerdict:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = bids_pb2_grpc.BidServiceStub(channel)
        completed: set[str] = set()
        token = ""
        while True:
            page = await stub.ListTasks(
                bids_pb2.ListTasksRequest(
                    client_email=client_email,
                    status=bids_pb2.TASK_STATUS_COMPLETED,
                    page_size=500,
                    page_token=token,
                ),
                metadata=AS_ADMIN,
                timeout=30,
            )
            completed.update(t.task_id for t in page.tasks)
            token = page.next_page_token
            if not token:
                break

        async def events(task_id: str) -> list[bids_pb2.TaskEvent]:
            found: list[bids_pb2.TaskEvent] = []
            token = ""
            while True:
                page = await stub.ListTaskEvents(
                    bids_pb2.ListTaskEventsRequest(
                        task_id=task_id, page_size=500, page_token=token
                    ),
                    metadata=AS_ADMIN,
                    timeout=30,
                )
                found += page.events
                token = page.next_page_token
                if not token:
                    return found

        per_task = await gather_limited(32, [functools.partial(events, t) for t in task_ids])
    verdict = BidsVerdict(len(task_ids), len(completed & set(task_ids)), 0)
    for task_id, found in zip(task_ids, per_task, strict=True):
        done = [e for e in found if e.new_status == bids_pb2.TASK_STATUS_COMPLETED]
        verdict.completion_events[len(done)] += 1
        if len(done) == 1 and task_id in completed:
            verdict.completed_once += 1
        for event in found:
            at = event.created_at.ToMicroseconds() / 1e6
            started = event.new_status == bids_pb2.TASK_STATUS_PROCESSING
            if started and (verdict.first_start is None or at < verdict.first_start):
                verdict.first_start = at
            ended = event.new_status == bids_pb2.TASK_STATUS_COMPLETED
            if ended and (verdict.last_completed is None or at > verdict.last_completed):
                verdict.last_completed = at
    return verdict
