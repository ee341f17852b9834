"""A task carries the agent whose bid was accepted (the execution service records it as
an owner); tasks accepted before the column existed get it from their bid on upgrade."""

from __future__ import annotations

from bids_support import (
    AGENT,
    Harness,
    accept_request,
    create_task_request,
    new_id,
    place_bid_request,
    scalar,
)
from marketplace.bids.v1 import bids_pb2
from marketplace_bids.migrations import SCRIPT_LOCATION
from marketplace_common.db import create_engine
from marketplace_common.migrations import upgrade_async
from sqlalchemy import text


async def test_an_accepted_bid_s_task_names_its_agent(bids: Harness) -> None:
    placed = (await bids.as_("agent").PlaceBid(place_bid_request())).bid
    accepted = await bids.as_("alice").AcceptBid(accept_request(placed.bid_id))
    assert accepted.task.agent_id == AGENT
    for reader in ("alice", "service", "admin"):
        got = await bids.as_(reader).GetTask(bids_pb2.GetTaskRequest(task_id=accepted.task.task_id))
        assert got.task.agent_id == AGENT
    direct = (await bids.as_("alice").CreateTask(create_task_request())).task
    assert direct.agent_id == ""


async def test_upgrade_fills_the_agent_of_tasks_accepted_before(raw_db_url: str) -> None:
    await upgrade_async(raw_db_url, SCRIPT_LOCATION, "0001")
    bid_id, task_id, direct_id = new_id(), new_id(), new_id()
    engine = create_engine(raw_db_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO bids (bid_id, marketplace, job_id, agent_id, amount_currency, "
                    "amount_units, amount_nanos, proposal, status, created_at, updated_at) "
                    "VALUES (:b, 'upwork', 'j', 'agent-9', 'EUR', 1, 0, 'p', 'ACCEPTED', "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"b": bid_id},
            )
            for tid, bid in ((task_id, bid_id), (direct_id, None)):
                await conn.execute(
                    text(
                        "INSERT INTO tasks (task_id, client_email, title, description, "
                        "budget_currency, budget_units, budget_nanos, status, bid_id, "
                        "created_at, updated_at) VALUES (:t, 'a@example.com', 't', 'd', 'EUR', "
                        "1, 0, 'PENDING', :b, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                    ),
                    {"t": tid, "b": bid},
                )
    finally:
        await engine.dispose()
    await upgrade_async(raw_db_url, SCRIPT_LOCATION)
    sql = "SELECT agent_id FROM tasks WHERE task_id = :t"
    assert await scalar(raw_db_url, sql, t=task_id) == "agent-9"
    assert await scalar(raw_db_url, sql, t=direct_id) is None
