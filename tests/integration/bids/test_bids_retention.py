"""Retention and revocation: RevokeDeliveryToken over a real channel; the purge in bounded
batches, old rows only, one instance at a time on PostgreSQL; ``bids-service purge``."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from bids_support import Harness, completed_task, expect_error, migrate, new_id
from marketplace.bids.v1 import bids_pb2
from marketplace_bids.storage.retention import (
    ADVISORY_LOCK_KEY,
    Purger,
    RetentionPolicy,
    _idempotency_batch,
)
from marketplace_bids.storage.tables import DeliveryTokenRow, IdempotencyRow
from marketplace_common.db import create_engine
from service_processes import BIN, clean_environment
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


async def test_the_client_revokes_a_token_and_it_stops_working(bids: Harness) -> None:
    task, _ = await completed_task(bids, client="alice")
    alice = bids.as_("alice")
    make = bids_pb2.CreateDeliveryTokenRequest(task_id=task.task_id)
    revoked, kept = (
        (await alice.CreateDeliveryToken(make)).token,
        (await alice.CreateDeliveryToken(make)).token,
    )
    # Anyone but the task's client gets the NOT_FOUND of an unknown token; nothing changes.
    for who in ("bob", "agent", "service"):
        d = await expect_error(
            bids.as_(who).RevokeDeliveryToken(bids_pb2.RevokeDeliveryTokenRequest(token=revoked))
        )
        assert (d.code, d.info.reason) == (grpc.StatusCode.NOT_FOUND, "DELIVERY_NOT_FOUND")
    assert (await alice.GetDelivery(bids_pb2.GetDeliveryRequest(token=revoked))).delivery.result

    done = await alice.RevokeDeliveryToken(bids_pb2.RevokeDeliveryTokenRequest(token=revoked))
    assert done.task_id == task.task_id
    for call in (
        alice.GetDelivery(bids_pb2.GetDeliveryRequest(token=revoked)),
        alice.RevokeDeliveryToken(bids_pb2.RevokeDeliveryTokenRequest(token=revoked)),
    ):
        d = await expect_error(call)
        assert (d.code, d.info.reason) == (grpc.StatusCode.NOT_FOUND, "DELIVERY_NOT_FOUND")
    # The task's other token still works.
    got = await alice.GetDelivery(bids_pb2.GetDeliveryRequest(token=kept))
    assert got.delivery.task_id == task.task_id

    d = await expect_error(alice.RevokeDeliveryToken(bids_pb2.RevokeDeliveryTokenRequest()))
    assert (d.code, d.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["token"])


async def _seed(engine: AsyncEngine, task_id: str) -> None:
    """7 idempotency records older than 7 days, 2 younger; 5 tokens expired over a day
    ago, 1 expired an hour ago, 1 live."""
    keys = [(f"old-{i}", NOW - 8 * DAY - timedelta(minutes=i)) for i in range(7)]
    keys += [(f"new-{i}", NOW - 6 * DAY) for i in range(2)]
    tokens = [(f"old{i}".ljust(64, "0"), NOW - 2 * DAY) for i in range(5)]
    tokens += [("recent".ljust(64, "0"), NOW - timedelta(hours=1))]
    tokens += [("live".ljust(64, "0"), NOW + DAY)]
    async with engine.begin() as conn:
        await conn.execute(
            insert(IdempotencyRow),
            [
                {"scope": "event", "key": k, "fingerprint": "f", "response": b"r", "created_at": at}
                for k, at in keys
            ],
        )
        await conn.execute(
            insert(DeliveryTokenRow),
            [
                {"token_hash": h, "task_id": task_id, "expires_at": at, "created_at": NOW - 3 * DAY}
                for h, at in tokens
            ],
        )


async def _left(engine: AsyncEngine) -> tuple[list[str], list[str]]:
    async with engine.connect() as conn:
        keys = (await conn.execute(select(IdempotencyRow.key).order_by(IdempotencyRow.key))).all()
        hashes = await conn.execute(
            select(DeliveryTokenRow.token_hash).order_by(DeliveryTokenRow.token_hash)
        )
        return [k for (k,) in keys], [h.rstrip("0") for (h,) in hashes.all()]


async def _fresh_task(bids: Harness) -> str:
    task, _ = await completed_task(bids, client="alice")
    # The API's own records (CreateTask, StartTask, CompleteTask) are recent: they stay.
    async with bids.server.engine.begin() as conn:
        await conn.execute(text("DELETE FROM idempotency_keys"))
    return task.task_id


async def test_batches_are_bounded_and_only_old_rows_go(bids: Harness) -> None:
    engine = bids.server.engine
    await _seed(engine, await _fresh_task(bids))
    purger = Purger(engine, RetentionPolicy(batch_size=3), clock=lambda: NOW)

    assert await purger.delete_batch(_idempotency_batch, NOW - 7 * DAY) == 3
    keys, _ = await _left(engine)
    assert len([k for k in keys if k.startswith("old-")]) == 4

    result = await purger.purge()
    assert (result.idempotency_records, result.delivery_tokens, result.skipped) == (4, 5, False)
    # 4 old keys: batches of 3 and 1; 5 old tokens: batches of 3 and 2.
    assert result.batches == 4
    keys, hashes = await _left(engine)
    assert keys == ["new-0", "new-1"]
    assert hashes == ["live", "recent"]
    # Nothing old left: a second run deletes nothing.
    again = await purger.purge()
    assert (again.idempotency_records, again.delivery_tokens) == (0, 0)


@pytest.mark.postgres
async def test_one_instance_purges_at_a_time_on_postgres(pg_url: str) -> None:
    await migrate(pg_url)
    # Two instances, each with its own engine (its own connections), as two replicas.
    first, second = create_engine(pg_url, pool_size=2), create_engine(pg_url, pool_size=2)
    try:
        async with first.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO tasks (task_id, client_email, title, description, budget_currency,"
                    " budget_units, budget_nanos, status, created_at, updated_at) VALUES (:t,"
                    " 'a@example.com', 't', '', 'EUR', 1, 0, 'COMPLETED', :now, :now)"
                ),
                {"t": (task_id := new_id()), "now": NOW},
            )
        await _seed(first, task_id)
        policy = RetentionPolicy(batch_size=2)
        a = Purger(first, policy, clock=lambda: NOW)
        b = Purger(second, policy, clock=lambda: NOW)
        async with first.connect() as holder:
            # While one instance holds the lock (mid-purge), the other skips and deletes nothing.
            await holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
            skipped = await b.purge()
            assert skipped.skipped
            keys, hashes = await _left(first)
            assert (len(keys), len(hashes)) == (9, 7)
            await holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
            await holder.commit()
        # Racing runs: the lock never lets both purge at once, and every old row goes once.
        results = await asyncio.gather(a.purge(), b.purge())
        ran = [r for r in results if not r.skipped]
        assert 1 <= len(ran) <= 2
        assert sum(r.idempotency_records for r in ran) == 7
        assert sum(r.delivery_tokens for r in ran) == 5
        keys, hashes = await _left(first)
        assert (keys, hashes) == (["new-0", "new-1"], ["live", "recent"])
        # The lock is released after a run: another session takes it at once.
        async with second.connect() as conn:
            took = await conn.execute(
                text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY}
            )
            assert took.scalar_one() is True
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
    finally:
        await first.dispose()
        await second.dispose()


def test_purge_command_deletes_and_reports_counts(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bids.db'}"
    asyncio.run(migrate(url))

    async def seed() -> None:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.begin() as conn:
                old = datetime.now(UTC) - 9 * DAY
                await conn.execute(
                    insert(IdempotencyRow),
                    [
                        {
                            "scope": "s",
                            "key": f"k{i}",
                            "fingerprint": "f",
                            "response": b"",
                            "created_at": old,
                        }
                        for i in range(5)
                    ],
                )
        finally:
            await engine.dispose()

    asyncio.run(seed())
    env = {**clean_environment(), "BIDS_DATABASE_URL": url, "BIDS_RETENTION_BATCH_SIZE": "2"}
    run = subprocess.run(
        [str(BIN / "bids-service"), "purge"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report == {
        "idempotency_records": 5,
        "delivery_tokens": 0,
        "batches": 4,
        "skipped": False,
    }

    async def count() -> int:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return int(
                    (
                        await conn.execute(select(func.count()).select_from(IdempotencyRow))
                    ).scalar_one()
                )
        finally:
            await engine.dispose()

    assert asyncio.run(count()) == 0
