"""Worker writes that ride out a short database outage instead of letting the lease lapse.

A TRANSIENT database error (a busy database, a serialization conflict, no pooled
connection within the pool's checkout timeout, a dropped connection) used to end
the run and leave the execution to be resumed only when its lease expired, a
whole ``lease_seconds`` later. Retrying here, with a short full-jitter backoff,
keeps the run going while the worker still holds the lease: the heartbeat renews
it meanwhile, every write is fenced on the lease owner (a lease taken over gives
LeaseLostError, not a retry), and a lost lease or a stopping pool cancels the
wait. After ``budget_seconds`` of failures the last error is raised and the
lease lapses as before.

Retrying is safe when the failed transaction did not commit (conflicts, busy,
checkout timeouts roll back or never begin). When a lost connection leaves it
unknown whether the commit landed, the retried write is still correct: status
writes repeat the same values, an attempt already stored is not stored twice
(the store inserts it only once per number), and a decision or finish that did
land makes the retry fail its fence, which the run treats like any decision
made before (it re-reads the execution).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from marketplace_common.errors import AgentError, ErrorType
from marketplace_common.retry import RetryPolicy, backoff_delay

from marketplace_execution.domain.errors import LeaseLostError

_log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoreRetryPolicy:
    """Backoff for a worker's database writes (seconds)."""

    base_delay: float = 0.05
    max_delay: float = 1.0
    budget_seconds: float = 30.0
    """How long to keep trying; the server sets it to ``lease_seconds``."""

    def as_retry_policy(self) -> RetryPolicy:
        """The kit's policy with this backoff (the budget is enforced by ``until_stored``)."""
        return RetryPolicy(base_delay=self.base_delay, max_delay=self.max_delay, deadline=None)


async def until_stored(
    fn: Callable[[], Awaitable[T]],
    *,
    what: str,
    execution_id: uuid.UUID,
    policy: StoreRetryPolicy,
    rng: random.Random | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> T:
    """``await fn()``, retried on TRANSIENT AgentErrors within the policy's budget."""
    jitter: random.Random | None = rng
    started = monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fn()
        except AgentError as exc:
            if isinstance(exc, LeaseLostError) or exc.error_type is not ErrorType.TRANSIENT:
                raise  # a fence that failed is an answer, not an outage
            left = policy.budget_seconds - (monotonic() - started)
            if left <= 0:
                raise
            jitter = jitter or random.Random()
            delay = min(left, backoff_delay(attempt, policy.as_retry_policy(), jitter))
            _log.info(
                "execution.store_retry",
                call=what,
                execution_id=str(execution_id),
                attempt=attempt,
                reason=exc.reason,
                delay=round(delay, 3),
            )
            await asyncio.sleep(delay)
