"""Retention: old idempotency records and long-expired delivery tokens are deleted.

Deletes run in bounded batches, each its own short transaction, so a purge
never holds many row locks nor one long transaction. On PostgreSQL a purge
takes a session advisory lock first (``pg_try_advisory_lock``): of several
replicas (and a ``bids-service purge`` CronJob) one purges at a time, the
others skip that round. SQLite has a single process, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from marketplace_common.clock import utc_now
from marketplace_common.logging import get_logger
from sqlalchemy import delete, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from marketplace_bids.storage.tables import DeliveryTokenRow, IdempotencyRow

# One application-wide key for pg_try_advisory_lock (any fixed bigint; "bids" + "purge").
ADVISORY_LOCK_KEY = 0x6269_6473_7075_7267
MAX_BATCHES_PER_RUN = 10_000


@dataclass(frozen=True)
class RetentionPolicy:
    """How long rows are kept, and how many go per batch."""

    idempotency_max_age: timedelta = timedelta(days=7)
    """Idempotency records older than this are deleted (a retry after that is a new request)."""
    delivery_token_grace: timedelta = timedelta(days=1)
    """Delivery tokens expired for longer than this are deleted."""
    batch_size: int = 1000


@dataclass(frozen=True)
class PurgeResult:
    """What one purge run did; ``skipped`` when another instance held the lock."""

    idempotency_records: int = 0
    delivery_tokens: int = 0
    batches: int = 0
    skipped: bool = False


def _idempotency_batch(cutoff: datetime, limit: int) -> Any:
    old = (
        select(IdempotencyRow.scope, IdempotencyRow.key)
        .where(IdempotencyRow.created_at < cutoff)
        .limit(limit)
    )
    return delete(IdempotencyRow).where(tuple_(IdempotencyRow.scope, IdempotencyRow.key).in_(old))


def _token_batch(cutoff: datetime, limit: int) -> Any:
    expired = (
        select(DeliveryTokenRow.token_hash).where(DeliveryTokenRow.expires_at < cutoff).limit(limit)
    )
    return delete(DeliveryTokenRow).where(
        DeliveryTokenRow.token_hash.in_(expired.scalar_subquery())
    )


class Purger:
    """Deletes what the policy no longer keeps, in bounded batches, one instance at a time."""

    def __init__(
        self,
        engine: AsyncEngine,
        policy: RetentionPolicy,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._engine = engine
        self._policy = policy
        self._now = clock
        self._log = get_logger(__name__)

    async def delete_batch(self, make: Callable[[datetime, int], Any], cutoff: datetime) -> int:
        """One batch of at most ``batch_size`` rows, in its own transaction; the count deleted."""
        async with self._engine.begin() as conn:
            result = await conn.execute(make(cutoff, self._policy.batch_size))
            return int(result.rowcount or 0)

    async def purge(self) -> PurgeResult:
        """One run: every batch until nothing old is left (bounded by MAX_BATCHES_PER_RUN)."""
        async with self._exclusive() as held:
            if not held:
                self._log.info("retention.skipped", reason="another instance is purging")
                return PurgeResult(skipped=True)
            now = self._now()
            keys, keys_batches = await self._drain(
                _idempotency_batch, now - self._policy.idempotency_max_age
            )
            tokens, token_batches = await self._drain(
                _token_batch, now - self._policy.delivery_token_grace
            )
        result = PurgeResult(keys, tokens, keys_batches + token_batches)
        self._log.info(
            "retention.purged",
            idempotency_records=result.idempotency_records,
            delivery_tokens=result.delivery_tokens,
            batches=result.batches,
        )
        return result

    async def _drain(
        self, make: Callable[[datetime, int], Any], cutoff: datetime
    ) -> tuple[int, int]:
        total = batches = 0
        while batches < MAX_BATCHES_PER_RUN:
            deleted = await self.delete_batch(make, cutoff)
            batches += 1
            total += deleted
            if deleted < self._policy.batch_size:
                break
        return total, batches

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[bool]:
        if self._engine.dialect.name != "postgresql":
            yield True
            return
        async with self._engine.connect() as conn:
            held = await _try_lock(conn)
            try:
                yield held
            finally:
                if held:
                    await conn.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
                    )
                    await conn.commit()

    async def run_every(self, interval: float) -> None:
        """Purge every ``interval`` seconds until cancelled; a failed run is logged, not fatal."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.purge()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next round tries again
                self._log.warning("retention.failed", error=type(exc).__name__)


async def _try_lock(conn: AsyncConnection) -> bool:
    got = await conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    held = bool(got.scalar_one())
    await conn.commit()  # the session lock outlives the transaction; don't idle in one
    return held
