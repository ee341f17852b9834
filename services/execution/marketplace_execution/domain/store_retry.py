"""Worker writes that ride out a short database outage instead of letting the lease lapse.

A TRANSIENT database error (a busy database, a serialization conflict, no pooled
connection within the pool's checkout timeout, a dropped connection) used to end
the run and leave the execution to be resumed only when its lease expired, a
whole ``lease_seconds`` later. Retrying here, with a short full-jitter backoff,
keeps the run going while the worker still holds the lease: the heartbeat renews
it meanwhile, every write is fenced on the lease (owner and claim epoch: a lease taken over gives
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

import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from marketplace_common.errors import AgentError, ErrorType
from marketplace_common.retrying import JITTER, Backoff, Clock, WaitPlan, retry_call

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


def _outage(exc: BaseException) -> bool:
    # A fence that failed (LeaseLostError) is an answer, not an outage.
    return (
        isinstance(exc, AgentError)
        and not isinstance(exc, LeaseLostError)
        and exc.error_type is ErrorType.TRANSIENT
    )


async def until_stored(
    fn: Callable[[], Awaitable[T]],
    *,
    what: str,
    execution_id: uuid.UUID,
    policy: StoreRetryPolicy,
    rng: random.Random | None = None,
    clock: Clock | None = None,
) -> T:
    """``await fn()``, retried on TRANSIENT AgentErrors within the policy's budget.

    A wait that would not end within the budget is not started: the last error is raised.
    """

    def log_retry(plan: WaitPlan) -> None:
        _log.info(
            "execution.store_retry",
            call=what,
            execution_id=str(execution_id),
            attempt=plan.attempt,
            reason=getattr(plan.error, "reason", None),
            delay=round(plan.delay, 3),
        )

    return await retry_call(
        fn,
        retry_on=_outage,
        wait=Backoff(policy.base_delay, policy.max_delay, rng or JITTER),
        deadline=policy.budget_seconds,
        clock=clock,
        before_wait=log_retry,
    )
