"""Complete's per-principal quota: calls per minute and LLM tokens per day.

Counted in the execution database (:class:`QuotaStore`), so every replica
shares one count. Windows are fixed and in UTC: the minute and the day a call
starts in. A call is admitted when the principal's tokens of the day are
below the limit and one more call fits in the minute (taken atomically, so
concurrent calls on any replicas never admit more than the limit); its tokens
(every attempt's, also of a failed call) are added when it ends, so the day's
last admitted call may end a little over the limit. Over a limit, Complete is
RESOURCE_EXHAUSTED ``QUOTA_EXCEEDED`` with RetryInfo: the time to the window's end.

``admin`` is not counted (operators, and the local development principal).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from marketplace_common.auth import Principal, Role

from marketplace_execution.domain.errors import QuotaExceededError


class QuotaWindow(enum.StrEnum):
    """What a counter counts, and over which window."""

    CALLS_PER_MINUTE = "calls_per_minute"
    TOKENS_PER_DAY = "tokens_per_day"

    def start(self, now: datetime) -> datetime:
        """The start of the window ``now`` is in (UTC)."""
        if self is QuotaWindow.CALLS_PER_MINUTE:
            return now.replace(second=0, microsecond=0)
        return now.replace(hour=0, minute=0, second=0, microsecond=0)

    def end(self, now: datetime) -> datetime:
        """The end of the window ``now`` is in."""
        length = timedelta(minutes=1) if self is QuotaWindow.CALLS_PER_MINUTE else timedelta(days=1)
        return self.start(now) + length


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """Per principal; None (or 0 in the settings) means no limit of that kind."""

    calls_per_minute: int | None = None
    tokens_per_day: int | None = None


class QuotaStore(Protocol):
    """Counters per (principal, window kind, window start), shared by every replica."""

    async def add(
        self, principal: str, window: QuotaWindow, start: datetime, amount: int, limit: int | None
    ) -> bool:
        """Adds ``amount`` atomically unless the counter would pass ``limit``
        (None: always adds); True when added."""
        ...

    async def used(self, principal: str, window: QuotaWindow, start: datetime) -> int:
        """The counter's value (0 when there is none)."""
        ...

    async def admit(
        self,
        principal: str,
        tokens: tuple[datetime, int] | None,
        calls: tuple[datetime, int] | None,
    ) -> QuotaWindow | None:
        """In one transaction: None when the day's tokens (window start, limit) are
        below their limit and one more call fits in the minute's (taken then);
        else the window that is used up (nothing taken)."""
        ...


class CompleteQuota:
    """Admits Complete calls within the limits and charges their tokens."""

    def __init__(self, store: QuotaStore, limits: QuotaLimits, now: Callable[[], datetime]) -> None:
        self._store = store
        self._limits = limits
        self._now = now

    def counts(self, principal: Principal) -> bool:
        """False for principals the quota does not apply to (admin)."""
        return principal.role is not Role.ADMIN

    async def admit(self, principal: str) -> None:
        """Takes one call of the minute, or raises QuotaExceededError (one transaction)."""
        now = self._now()
        day, minute = QuotaWindow.TOKENS_PER_DAY, QuotaWindow.CALLS_PER_MINUTE
        tokens, calls = self._limits.tokens_per_day, self._limits.calls_per_minute
        if not tokens and not calls:
            return
        full = await self._store.admit(
            principal,
            (day.start(now), tokens) if tokens else None,
            (minute.start(now), calls) if calls else None,
        )
        if full is day and tokens:
            raise QuotaExceededError(day.value, tokens, _until(day.end(now), now))
        if full is minute and calls:
            raise QuotaExceededError(minute.value, calls, _until(minute.end(now), now))

    async def charge_tokens(self, principal: str, tokens: int) -> None:
        """Adds the tokens a call used to the principal's day."""
        if self._limits.tokens_per_day and tokens > 0:
            day = QuotaWindow.TOKENS_PER_DAY
            await self._store.add(principal, day, day.start(self._now()), tokens, None)


def _until(end: datetime, now: datetime) -> float:
    return max((end - now).total_seconds(), 0.001)
