"""The provider keys' controls built from the settings (docs/llm-limits.md): limits,
cooldowns, retry budget, fallback chains, prices and the cost cap."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_execution.domain.limits import (
    CooldownPolicy,
    KeyLimits,
    LimitSettings,
    LimitState,
    MemoryLimitState,
    ProviderLimiter,
)
from marketplace_execution.domain.pricing import NANOS_PER_USD, ModelPrice, Prices
from marketplace_execution.domain.provider_calls import LLMControls
from marketplace_execution.domain.retry_budget import RetryBudget, RetryBudgetConfig
from marketplace_execution.settings import ExecutionSettings
from marketplace_execution.storage.limits import SqlLimitState


def limit_settings(settings: ExecutionSettings) -> LimitSettings:
    """The provider keys' limits: the defaults, and each model's own where set."""
    default = KeyLimits(
        requests_per_minute=settings.pacing_requests_per_minute,
        tokens_per_minute=settings.pacing_tokens_per_minute,
        burst=settings.pacing_burst,
    )
    per_model = {
        model: KeyLimits(
            requests_per_minute=limits.requests_per_minute or default.requests_per_minute,
            tokens_per_minute=limits.tokens_per_minute or default.tokens_per_minute,
            burst=default.burst if limits.burst is None else limits.burst,
        )
        for model, limits in settings.llm_limits.items()
    }
    cooldown = CooldownPolicy(
        base=settings.llm_cooldown_base_seconds, cap=settings.llm_cooldown_max_seconds
    )
    return LimitSettings(default, per_model, settings.pacing_margin, cooldown)


def build_controls(settings: ExecutionSettings, engine: AsyncEngine | None) -> LLMControls:
    """Everything that governs calls beyond one execution.

    On PostgreSQL the keys' state lives in the execution database, shared by every
    replica; otherwise (SQLite: one process) in memory.
    """
    state: LimitState = MemoryLimitState()
    if engine is not None and engine.dialect.name == "postgresql":
        state = SqlLimitState(engine)
    budget = RetryBudget(
        RetryBudgetConfig(
            ratio=settings.llm_retry_budget_ratio,
            window=settings.llm_retry_budget_window_seconds,
            min_retries=settings.llm_retry_budget_min_retries,
        )
    )
    prices = Prices({m: ModelPrice(p.prompt, p.completion) for m, p in settings.llm_prices.items()})
    cap = settings.llm_cost_cap_usd
    return LLMControls(
        limiter=ProviderLimiter(state, limit_settings(settings)),
        budget=budget,
        prices=prices,
        fallbacks={model: tuple(chain) for model, chain in settings.llm_fallbacks.items()},
        fallback_after_cooldown=settings.llm_fallback_after_cooldown_seconds,
        cost_cap_nanos=None if cap is None else int(cap * NANOS_PER_USD),
    )
