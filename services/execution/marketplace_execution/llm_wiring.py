"""Builds the LLM side from the settings: provider, pacer, retry policy, attempt loop,
and the adapter that lets the domain's worker and Complete use the attempt loop."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace

from marketplace_common.retrying import RetryPolicy
from prometheus_client import CollectorRegistry

from marketplace_execution.domain.attempt_loop import AttemptRunner, LLMAttempt
from marketplace_execution.domain.llm_metrics import LLMMetrics
from marketplace_execution.domain.models import AttemptView
from marketplace_execution.domain.pacing import Pacer, PacingConfig
from marketplace_execution.domain.ports import AttemptCallback, JobResult, JobSpec
from marketplace_execution.llm.base import LLMProvider, LLMRequest, LLMUsage
from marketplace_execution.llm.offline import OFFLINE_MODEL, OfflineFaults, OfflineProvider
from marketplace_execution.llm.openai_provider import OpenAIProvider
from marketplace_execution.settings import ExecutionSettings


def attempt_view(attempt: LLMAttempt) -> AttemptView:
    """An attempt loop record as the domain stores it."""
    record = attempt.record
    failed = record.error_type is not None
    return AttemptView(
        number=record.number,
        started_at=record.started_at,
        finished_at=record.finished_at,
        error_type=record.error_type,
        code=record.code if failed else "",
        message=record.message if failed else "",
        retry_delay=record.delay,
        delay_source=record.delay_source.value,
        pacing_delay=attempt.pacing_delay,
    )


def _with_success_usage(
    attempts: tuple[AttemptView, ...], usage: LLMUsage | None
) -> tuple[AttemptView, ...]:
    """The attempts, the successful (last) one carrying the provider's reported usage
    when no attempt carries any yet (Complete's token quota charges it)."""
    if usage is None or not attempts:
        return attempts
    if any(a.prompt_tokens or a.completion_tokens for a in attempts):
        return attempts
    last = replace(
        attempts[-1], prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens
    )
    return (*attempts[:-1], last)


class AttemptLoopJobRunner:
    """The domain's JobRunner on E1's AttemptRunner."""

    def __init__(self, runner: AttemptRunner, policy: RetryPolicy) -> None:
        self._runner = runner
        self._policy = policy

    async def run(
        self,
        job: JobSpec,
        *,
        previous: Sequence[AttemptView] = (),
        on_attempt: AttemptCallback | None = None,
    ) -> JobResult:
        schema = json.loads(job.output_schema) if job.output_schema else None
        request = LLMRequest.from_prompt(job.prompt, model=job.model or None, output_schema=schema)

        async def report(attempt: LLMAttempt) -> None:
            if on_attempt is not None:
                await on_attempt(attempt_view(attempt), attempt.retry_follows)

        outcome = await self._runner.run(
            request,
            on_attempt=report,
            previous_attempts=len(previous),
            policy=self._policy_for(job),
        )
        return JobResult(
            text=outcome.text,
            model=outcome.model or job.model,
            error=outcome.error,
            attempts=_with_success_usage(
                tuple(attempt_view(r) for r in outcome.attempts), outcome.usage
            ),
        )

    def _policy_for(self, job: JobSpec) -> RetryPolicy:
        """The runner's policy with the job's attempt budget and, when the caller
        waits a bounded time, a deadline no later than that."""
        deadline = self._policy.deadline
        if job.time_left is not None:
            deadline = job.time_left if deadline is None else min(deadline, job.time_left)
        return replace(self._policy, max_attempts=job.max_attempts, deadline=deadline)


@dataclass
class LLMStack:
    """The provider and the attempt loop built on it."""

    provider: LLMProvider
    runner: AttemptLoopJobRunner
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
    settings: ExecutionSettings, registry: CollectorRegistry | None = None
) -> LLMStack:
    """Provider, pacer and retry policy from the settings, wrapped for the domain.

    The attempt counters go to ``registry`` (the server's, so /metrics shows them).
    """
    provider, default_model = build_provider(settings)
    pacer = Pacer(
        PacingConfig(
            delay=settings.pacing_delay_seconds,
            jitter=settings.pacing_jitter,
            max_concurrency=settings.pacing_max_concurrency,
            requests_per_minute=settings.pacing_requests_per_minute,
        )
    )
    policy = RetryPolicy(
        max_llm_fixable_attempts=settings.llm_max_llm_fixable_attempts,
        base_delay=settings.llm_backoff_base_seconds,
        max_delay=settings.llm_backoff_max_seconds,
        deadline=settings.llm_deadline_seconds,
    )
    loop = AttemptRunner(provider, pacer, policy, metrics=LLMMetrics(registry))
    runner = AttemptLoopJobRunner(loop, policy)
    return LLMStack(provider, runner, default_model)
