"""One call to a provider key: its permit, the call, and what the key learns from it.

:class:`ProviderCalls` is what the attempt loop calls once per attempt (the
seam for a tracing span per attempt). It:

1. waits for the key's permit (``domain.limits``: shared rate limits and
   cooldowns); the wait is reported, it is not an attempt;
2. counts the call in the key's retry budget (``domain.retry_budget``; the loop
   takes a retry from it before it retries);
3. makes the call within the time left;
4. on a 429 starts the key's cooldown for every caller (the server's
   Retry-After, else exponential with jitter), and on a 503 that carries a
   Retry-After; on success gives the key the
   reported token usage and prices it (``domain.pricing``);
5. feeds the metrics (latency, permit wait, tokens, cost, 429s, cooldowns).

It never retries and never decides what follows: the attempt loop does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from marketplace_common.errors import AgentError, RateLimitedError, failure_code, known_error
from marketplace_common.retrying import Clock, SystemClock

from marketplace_execution.domain.limits import (
    MemoryLimitState,
    PermitDeadlineError,
    ProviderLimiter,
    estimate_tokens,
)
from marketplace_execution.domain.llm import LLMProvider, LLMRequest, LLMResponse, LLMUsage
from marketplace_execution.domain.metrics import LLMMetrics
from marketplace_execution.domain.pricing import Prices, usd
from marketplace_execution.domain.retry_budget import RetryBudget


@dataclass(frozen=True, slots=True)
class LLMControls:
    """What governs calls beyond one execution (docs/llm-limits.md).

    Attributes:
        limiter: the provider keys' shared limits and cooldowns.
        budget: the keys' retry budgets; None for no budget.
        prices: token prices per model (costs and the cost cap).
        fallbacks: model -> the models to try next, in order.
        fallback_after_cooldown: a cooldown longer than this (seconds) moves a
            run to the next model of its chain when there is one.
        cost_cap_nanos: no call starts once an execution's calls cost this much
            (nano-USD); None for no cap.
    """

    limiter: ProviderLimiter = field(default_factory=lambda: ProviderLimiter(MemoryLimitState()))
    budget: RetryBudget | None = None
    prices: Prices = field(default_factory=Prices)
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    fallback_after_cooldown: float = 10.0
    cost_cap_nanos: int | None = None

    def chain(self, model: str) -> tuple[str, ...]:
        """``model`` and its fallbacks, without repeats."""
        return tuple(dict.fromkeys((model, *self.fallbacks.get(model, ()))))


@dataclass(frozen=True, slots=True)
class CallResult:
    """One call as the key saw it.

    ``waited`` is the permit wait; ``cooldown`` the pause this call's 429/503
    started on the key (None when it started none), ``server_delay`` whether
    the provider gave that pause; ``rate_limited`` marks a 429.
    """

    model: str
    started_at: datetime
    finished_at: datetime
    waited: float
    response: LLMResponse | None = None
    exc: BaseException | None = None
    error: AgentError | None = None
    cooldown: float | None = None
    server_delay: bool = False
    rate_limited: bool = False
    cost_nanos: int = 0

    @property
    def usage(self) -> LLMUsage | None:
        return None if self.response is None else self.response.usage


class ProviderCalls:
    """Permit, call, cooldown and usage for one provider (see the module docs)."""

    def __init__(
        self,
        provider: LLMProvider,
        controls: LLMControls,
        metrics: LLMMetrics,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.provider = provider
        self.controls = controls
        self.metrics = metrics
        self._clock: Clock = clock or SystemClock()

    def key(self, model: str) -> str:
        return ProviderLimiter.key(self.provider.name, model)

    def _now(self) -> datetime:
        now = getattr(self._clock, "now", None)
        return now() if callable(now) else datetime.now(UTC)

    async def call(
        self,
        request: LLMRequest,
        model: str,
        deadline: float | None,
        *,
        max_cooldown: float | None = None,
    ) -> CallResult:
        """One attempt's call to ``model``; never raises an AgentError.

        ``deadline`` is a ``clock.monotonic()`` value. ``max_cooldown``: a cooldown on the key
        longer than this returns at once with ``cooldown`` set and no call made
        (the loop moves to a fallback model).
        """
        name, limiter = self.provider.name, self.controls.limiter
        tokens = estimate_tokens(sum(len(m.content) for m in request.messages))
        started = self._clock.monotonic()
        if max_cooldown is not None:
            pending = await limiter.state.cooldown(self.key(model))
            if pending.left > max_cooldown:
                now = self._now()
                return CallResult(model, now, now, 0.0, cooldown=pending.left)
        try:
            permit = await limiter.permit(name, model, tokens, deadline)
        except PermitDeadlineError as late:
            waited = self._clock.monotonic() - started
            now = self._now()
            return CallResult(model, now, now, waited, exc=late, error=late)
        self.metrics.observe_permit_wait(name, model, permit.waited)
        if self.controls.budget is not None:
            self.controls.budget.record_call(permit.key)
        started_at = self._now()
        call_started = self._clock.monotonic()
        try:
            remaining = None if deadline is None else deadline - call_started
            async with asyncio.timeout(remaining):
                response = await self.provider.complete_async(_bounded(request, model, remaining))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.observe_call(name, model, self._clock.monotonic() - call_started)
            return await self._failed(exc, model, permit.key, started_at, permit.waited)
        self.metrics.observe_call(name, model, self._clock.monotonic() - call_started)
        usage = response.usage
        await limiter.settle(permit, model, None if usage is None else usage.total_tokens)
        cost = 0
        if usage is not None:
            cost = self.controls.prices.cost_nanos(
                model, usage.prompt_tokens, usage.completion_tokens
            )
            self.metrics.count_usage(model, usage.prompt_tokens, usage.completion_tokens, usd(cost))
        return CallResult(
            model, started_at, self._now(), permit.waited, response=response, cost_nanos=cost
        )

    async def _failed(
        self, exc: Exception, model: str, key: str, started_at: datetime, waited: float
    ) -> CallResult:
        error = known_error(exc)
        if error is not exc:
            error.__cause__ = exc
        code = failure_code(exc)
        rate_limited = code == "429" or isinstance(error, RateLimitedError)
        cooldown = None
        delay = error.retry_after
        # A 429 always cools the key down (for the time the provider gave, else
        # exponentially); a 503 only when the provider said for how long.
        if rate_limited or (code == "503" and delay is not None):
            name = self.provider.name
            if rate_limited:
                self.metrics.count_rate_limited(name, model)
            self.metrics.count_cooldown(name, model)
            cooldown = await self.controls.limiter.cool_down(key, delay)
        return CallResult(
            model,
            started_at,
            self._now(),
            waited,
            exc=exc,
            error=error,
            cooldown=cooldown,
            server_delay=delay is not None,
            rate_limited=rate_limited,
        )


def _bounded(request: LLMRequest, model: str, remaining: float | None) -> LLMRequest:
    """The request for ``model``, its timeout no longer than the time left."""
    bounded = replace(request, model=model)
    if remaining is not None and (request.timeout is None or request.timeout > remaining):
        bounded = replace(bounded, timeout=max(remaining, 0.001))
    return bounded
