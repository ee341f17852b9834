"""Calls to BidService that must land: retried on transient errors with the same event_id."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from marketplace_common.classify import as_agent_error
from marketplace_common.errors import AgentError, ErrorType
from marketplace_common.retry import RetryPolicy, compute_delay

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

    def as_retry_policy(self) -> RetryPolicy:
        """The kit's policy with this backoff (no attempt or time limit of its own)."""
        return RetryPolicy(base_delay=self.base_delay, max_delay=self.max_delay, deadline=None)


async def call_until_landed(
    fn: Callable[[], Awaitable[None]],
    *,
    what: str,
    execution_id: uuid.UUID,
    policy: ReportPolicy,
    rng: random.Random | None = None,
) -> AgentError | None:
    """Runs ``fn`` until it succeeds (None) or fails for good (the error, not raised).

    TRANSIENT errors are retried with full-jitter backoff, or the server's delay.
    """
    jitter = rng or random.Random()
    attempt = 0
    while True:
        attempt += 1
        try:
            await fn()
        except Exception as exc:
            err = as_agent_error(exc)
            if err.error_type is not ErrorType.TRANSIENT:
                _log.warning(
                    "execution.bids_call_rejected",
                    call=what,
                    execution_id=str(execution_id),
                    reason=err.reason,
                    error_type=err.error_type.value,
                    message=err.message,
                )
                return err
            # The server's delay (RetryInfo) wins over backoff, capped by our own maximum.
            delay, _ = compute_delay(err, attempt, policy.as_retry_policy(), jitter)
            delay = min(policy.max_delay, delay)
            _log.info(
                "execution.bids_call_retry",
                call=what,
                execution_id=str(execution_id),
                attempt=attempt,
                reason=err.reason,
                delay=round(delay, 3),
            )
            await asyncio.sleep(delay)
        else:
            return None
