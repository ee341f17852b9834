"""The LLM side built from the settings: the provider, the pacer, the retry policy
and the attempt loop (the domain's JobRunner)."""

from __future__ import annotations

from dataclasses import dataclass

from marketplace_common.retrying import RetryPolicy
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_execution.domain.attempt_loop import AttemptRunner
from marketplace_execution.domain.llm import LLMProvider
from marketplace_execution.domain.metrics import LLMMetrics
from marketplace_execution.domain.pacing import Pacer, PacingConfig
from marketplace_execution.llm.controls import build_controls
from marketplace_execution.llm.offline import OFFLINE_MODEL, OfflineFaults, OfflineProvider
from marketplace_execution.llm.openai_provider import OpenAIProvider
from marketplace_execution.settings import ExecutionSettings


@dataclass
class LLMStack:
    """The provider and the attempt loop built on it."""

    provider: LLMProvider
    runner: AttemptRunner
    default_model: str

    async def aclose(self) -> None:
        await self.provider.aclose()


def build_provider(settings: ExecutionSettings) -> tuple[LLMProvider, str]:
    """The configured provider and its default model name."""
    if settings.llm_provider == "openai":
        if not settings.llm_model:
            raise ValueError("EXECUTION_LLM_MODEL is required with the openai provider")
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
        provider: LLMProvider = OpenAIProvider(
            model=settings.llm_model,
            base_url=settings.llm_base_url or None,
            api_key=key,
            timeout=settings.llm_timeout_seconds,
        )
        return provider, settings.llm_model
    faults = OfflineFaults(
        transient=settings.llm_offline_transient_rate,
        rate_limited=settings.llm_offline_rate_limited_rate,
        permanent=settings.llm_offline_permanent_rate,
        malformed=settings.llm_offline_malformed_rate,
        seed=settings.llm_offline_seed,
    )
    offline = OfflineProvider(faults, latency=settings.llm_offline_latency_seconds)
    return offline, settings.llm_model or OFFLINE_MODEL


def build_llm_stack(
    settings: ExecutionSettings,
    metrics: LLMMetrics | None = None,
    engine: AsyncEngine | None = None,
) -> LLMStack:
    """Provider, pacer, retry policy and the provider keys' controls from the settings,
    and the attempt loop on them.

    The attempt loop and the provider keys count in ``metrics`` (none by default);
    ``engine`` (the execution database) shares the keys' limits on PostgreSQL.
    """
    provider, default_model = build_provider(settings)
    pacer = Pacer(
        PacingConfig(
            delay=settings.pacing_delay_seconds,
            jitter=settings.pacing_jitter,
            max_concurrency=settings.pacing_max_concurrency,
        )
    )
    policy = RetryPolicy(
        max_llm_fixable_attempts=settings.llm_max_llm_fixable_attempts,
        base_delay=settings.llm_backoff_base_seconds,
        max_delay=settings.llm_backoff_max_seconds,
        deadline=settings.llm_deadline_seconds,
    )
    runner = AttemptRunner(
        provider,
        pacer,
        policy,
        metrics=metrics,
        controls=build_controls(settings, engine),
        default_model=default_model,
    )
    return LLMStack(provider, runner, default_model)
