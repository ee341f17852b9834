"""Calls to BidService that must land: retried on transient errors with the same event_id."""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from marketplace_common.errors import AgentError, ErrorType, known_error
from marketplace_common.retrying import JITTER, Backoff, WaitPlan, retry_call

_log = structlog.get_logger(__name__)


def event_id(execution_id: uuid.UUID, step: str) -> str:
    """The deterministic event_id of a task transition ("start", "complete", "fail")."""
    return str(uuid.uuid5(execution_id, step))


@dataclass(frozen=True, slots=True)
class ReportPolicy:
    """Backoff for BidService calls. There is no attempt limit: the outcome of an
    execution must reach BidService, and the worker holds (and heartbeats) the
    lease meanwhile; a shutdown or a lost lease cancels the wait."""

    base_delay: float = 0.2
    max_delay: float = 5.0


async def call_until_landed(
    fn: Callable[[], Awaitable[None]],
    *,
    what: str,
    execution_id: uuid.UUID,
    policy: ReportPolicy,
    rng: random.Random | None = None,
    on_retry: Callable[[str], None] | None = None,
) -> AgentError | None:
    """Runs ``fn`` until it succeeds (None) or fails for good (the error, not raised).

    TRANSIENT errors are retried with full-jitter backoff, or the server's delay
    capped by ``policy.max_delay``; ``on_retry(what)`` is called before each retry.
    """

    def log_retry(plan: WaitPlan) -> None:
        if on_retry is not None:
            on_retry(what)
        _log.info(
            "execution.bids_call_retry",
            call=what,
            execution_id=str(execution_id),
            attempt=plan.attempt,
            reason=known_error(plan.error).reason,
            delay=round(plan.delay, 3),
        )

    try:
        await retry_call(
            fn,
            retry_on=lambda exc: known_error(exc).error_type is ErrorType.TRANSIENT,
            wait=Backoff(policy.base_delay, policy.max_delay, rng or JITTER, cap_directed=True),
            before_wait=log_retry,
        )
    except Exception as exc:
        err = known_error(exc)
        _log.warning(
            "execution.bids_call_rejected",
            call=what,
            execution_id=str(execution_id),
            reason=err.reason,
            error_type=err.error_type.value,
            message=err.message,
        )
        return err
    return None
