"""The provider-key limiter's state in PostgreSQL, shared by every replica.

One row per key in ``llm_limits``; each operation is one short statement that is
its own transaction (autocommit, one round trip; a reservation is one ``INSERT
... ON CONFLICT DO UPDATE ... RETURNING``), so replicas serialize on the key's
row for microseconds and never hold a lock across a wait. Times are the database's clock
(``statement_timestamp()`` as epoch seconds), so replicas on hosts whose clocks
disagree still share one timeline; callers only ever see differences (waits).

The arithmetic is ``domain.limits.MemoryLimitState``'s, written in SQL.
"""

from __future__ import annotations

from typing import Any

from marketplace_common.db import run_statement, run_transaction
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from marketplace_execution.domain.limits import (
    CooldownPolicy,
    CooldownState,
    Cost,
    Reservation,
)

# "Now" in every statement; a constant, so the f-strings below interpolate no input.
_NOW = "CAST(extract(epoch FROM statement_timestamp()) AS double precision)"

_RESERVE = text(f"""
INSERT INTO llm_limits AS l
    (limit_key, request_tat, token_tat, cooldown_until, cooldown_streak, epoch)
VALUES (:key, {_NOW} + :request_cost, {_NOW} + :token_cost, 0, 0, 0)
ON CONFLICT (limit_key) DO UPDATE SET
    request_tat = GREATEST(l.request_tat, {_NOW}, l.cooldown_until) + :request_cost,
    token_tat = GREATEST(l.token_tat, {_NOW}, l.cooldown_until) + :token_cost
RETURNING
    GREATEST(l.request_tat - :request_tolerance, l.token_tat - :token_tolerance) - {_NOW},
    l.cooldown_until - {_NOW},
    l.epoch,
    l.cooldown_streak
""")  # noqa: S608

_COOLDOWN = text(f"""
SELECT cooldown_until - {_NOW}, epoch, cooldown_streak
FROM llm_limits WHERE limit_key = :key
""")  # noqa: S608

# :seconds NULL: exponential in the streak, capped, jittered down to half.
_START_COOLDOWN = text(f"""
UPDATE llm_limits AS l SET
    cooldown_until = c.until,
    request_tat = c.until,
    token_tat = c.until,
    cooldown_streak = l.cooldown_streak + 1,
    epoch = l.epoch + 1
FROM (
    SELECT GREATEST(cooldown_until, {_NOW} + COALESCE(
        CAST(:seconds AS double precision),
        LEAST(:cap, :base * power(2, cooldown_streak)) * (0.5 + random() * 0.5)
    )) AS until
    FROM llm_limits WHERE limit_key = :key
) AS c
WHERE l.limit_key = :key
RETURNING l.cooldown_until - {_NOW}
""")  # noqa: S608

_ENSURE = text("""
INSERT INTO llm_limits (limit_key, request_tat, token_tat, cooldown_until, cooldown_streak, epoch)
VALUES (:key, 0, 0, 0, 0, 0)
ON CONFLICT (limit_key) DO NOTHING
""")

_SETTLE = text("""
UPDATE llm_limits SET token_tat = token_tat + :token_seconds, cooldown_streak = 0
WHERE limit_key = :key
""")


class SqlLimitState:
    """:class:`~marketplace_execution.domain.limits.LimitState` in PostgreSQL."""

    def __init__(self, engine: AsyncEngine) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("the shared limiter needs PostgreSQL; use MemoryLimitState")
        self._engine = engine

    async def _one(self, statement: TextClause, **params: object) -> tuple[Any, ...] | None:
        # One statement, autocommit: one round trip (no BEGIN/COMMIT around it).
        rows = await run_statement(self._engine, statement.bindparams(**params))
        return tuple(rows[0]) if rows else None

    async def reserve(self, key: str, cost: Cost) -> Reservation:
        row = await self._one(
            _RESERVE,
            key=key,
            request_cost=cost.request_cost,
            request_tolerance=cost.request_tolerance,
            token_cost=cost.token_cost,
            token_tolerance=cost.token_tolerance,
        )
        assert row is not None  # an upsert always returns its row
        wait, left, epoch, streak = row
        return Reservation(float(wait), float(left), int(epoch), int(streak))

    async def cooldown(self, key: str) -> CooldownState:
        row = await self._one(_COOLDOWN, key=key)
        if row is None:
            return CooldownState(0.0, 0)
        left, epoch, streak = row
        return CooldownState(float(left), int(epoch), int(streak))

    async def start_cooldown(
        self, key: str, seconds: float | None, policy: CooldownPolicy
    ) -> float:
        params = {"key": key, "seconds": seconds, "cap": policy.cap, "base": policy.base}

        async def work(session: AsyncConnection) -> float:
            # Rare (a 429): the row is made first if no permit made it yet.
            await session.execute(_ENSURE, {"key": key})
            left = (await session.execute(_START_COOLDOWN, params)).scalar_one()
            return max(0.0, float(left))

        return await run_transaction(self._engine, work)

    async def settle(self, key: str, token_seconds: float) -> None:
        await run_statement(self._engine, _SETTLE.bindparams(key=key, token_seconds=token_seconds))
