"""The JobRunner on the attempt loop: a job in, its attempts as the domain stores them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

from marketplace_common.retrying import RetryPolicy

from marketplace_execution.domain.attempt_loop import AttemptRunner, LLMAttempt
from marketplace_execution.domain.llm import LLMRequest
from marketplace_execution.domain.models import AttemptView, Usage
from marketplace_execution.domain.ports import AttemptCallback, JobResult, JobSpec


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
        model=attempt.model,
        prompt_tokens=0 if attempt.usage is None else attempt.usage.prompt_tokens,
        completion_tokens=0 if attempt.usage is None else attempt.usage.completion_tokens,
        cost_nanos=attempt.cost_nanos,
    )


class AttemptLoopJobRunner:
    """The domain's JobRunner on the attempt loop (``AttemptRunner``)."""

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
            previous_cost_nanos=Usage.total(previous).cost_nanos,
        )
        return JobResult(
            text=outcome.text,
            model=outcome.model or job.model,
            error=outcome.error,
            attempts=tuple(attempt_view(r) for r in outcome.attempts),
        )

    def _policy_for(self, job: JobSpec) -> RetryPolicy:
        """The runner's policy with the job's attempt budget and, when the caller
        waits a bounded time, a deadline no later than that."""
        deadline = self._policy.deadline
        if job.time_left is not None:
            deadline = job.time_left if deadline is None else min(deadline, job.time_left)
        return replace(self._policy, max_attempts=job.max_attempts, deadline=deadline)
