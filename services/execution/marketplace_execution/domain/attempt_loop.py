"""The attempt loop: pacing, smart retry and a record of every LLM call.

``AttemptRunner`` is the domain's ``JobRunner``: ``run`` asks the provider for
a ``JobSpec`` until it has a valid answer or a reason to stop, per docs/errors.md:

* TRANSIENT (timeouts, 408/409/429/5xx, connection errors): retried after a
  full-jitter backoff, or after the server's delay (Retry-After,
  retry-after-ms) when it gave one, within ``policy.max_attempts`` and the
  deadline. A server delay longer than ``policy.max_delay`` or than the time
  left is not waited out: the run fails now, TRANSIENT, with ``retry_after``.
  ``max_attempts`` is the job's; the deadline the smaller of the policy's and
  the job's ``time_left``.
* LLM_FIXABLE (the answer is not JSON or fails ``output_schema``): re-asked at
  once (only the pacing pause) with the bad answer and the validation errors
  appended to the conversation, on the budget ``policy.max_llm_fixable_attempts``
  (re-asks) which does not use up ``max_attempts``. The same violations twice
  in a row end the run with ``LLMOutputInvalidError`` (PERMANENT).
* PERMANENT and FATAL: the run stops at once, except that an error of the
  model itself (unknown model, context length exceeded) moves the run to the
  next model of its fallback chain (``LLMControls.fallbacks``), and so does a
  cooldown on the key longer than ``LLMControls.fallback_after_cooldown``.

Provider keys (docs/llm-limits.md): every call first waits for its key's
permit (shared rate limits and cooldowns, ``domain.provider_calls``); the wait
is reported as the attempt's ``pacing_delay``, it is not an attempt and it
counts toward the deadline. A 429 starts a cooldown of the key for every
caller and is *not charged* to the run's ``max_attempts`` (the limit belongs to
the key, not to this run): the next call waits for its permit, after the
cooldown (at most ``MAX_RATE_LIMITED`` such attempts a run). A charged retry
also needs the key's retry budget (``RetryBudgetExhaustedError`` otherwise).
No call starts once the run's calls cost ``LLMControls.cost_cap_nanos``
(``BudgetExhaustedError``, PERMANENT).

Each attempt is one ``AttemptView``, as the execution stores it: the pacing
wait before the call (``pacing_delay``, the key's permit included), the model
asked, the usage reported and its cost. It is logged once (``llm.attempt``),
counted in ``llm_attempts_total``, traced as an ``llm.attempt`` span (error
type, delay and delay source as attributes) and handed to ``on_attempt`` with
whether another attempt follows; the callback is awaited before the next
attempt starts so a caller can store it durably first. Its ``retry_delay`` and
``delay_source`` are the wait *after* it, before the next attempt: BACKOFF or
SERVER_RETRY_AFTER for a retry (after a 429/503 the key's cooldown, which the
next permit waits out), PACING (the pacer's pause) for a re-ask, 0 and NONE
when nothing follows.

Cancellation (``asyncio.CancelledError``) is never caught: it propagates
from the provider call, the pacing wait or a backoff sleep at once.

Why this loop is not ``marketplace_common.retrying.retry_call``: it uses the
kit's wait rule (``Backoff.plan``: the server's delay, else full-jitter
backoff; ``Backoff.allows``: not past the cap or the deadline), but
``retry_call`` cannot express the rest of the transient path. Its callback
before a wait is synchronous, so an attempt could be stored only once the
wait is over (a watcher would see the attempt and RETRY_SCHEDULED late); it
re-raises the attempt's own error, not a retry-budget refusal nor the error
carrying a delay past the cap; it counts every attempt, where a 429 is not
charged; it sleeps every wait, where the key's permit waits out a cooldown
(which is BACKOFF, not SERVER_RETRY_AFTER, without Retry-After); and re-asks
and fallbacks would still need this loop around it. A sketch of the transient
path on ``retry_call`` took 66 lines with adapters for each of these (and
still changed when attempts are stored); here it is ``_retry``, 33 lines,
and one sleep in the loop.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from jsonschema.protocols import Validator
from marketplace_common import tracing
from marketplace_common.errors import (
    AgentError,
    ErrorType,
    InvalidArgumentError,
    LLMFixableError,
    LLMOutputInvalidError,
    RateLimitedError,
    error_type_of,
    failure_code,
)
from marketplace_common.logging import get_logger
from marketplace_common.retrying import Backoff, Clock, DelaySource, RetryPolicy, SystemClock

from marketplace_execution.domain.limits import (
    MemoryLimitState,
    PermitDeadlineError,
    ProviderLimiter,
)
from marketplace_execution.domain.llm import ChatMessage, LLMProvider, LLMRequest, LLMUsage
from marketplace_execution.domain.metrics import NO_ERROR, LLMMetrics, UncountedMetrics
from marketplace_execution.domain.models import AttemptView, Usage
from marketplace_execution.domain.output_validation import (
    compile_schema,
    feedback_message,
    validate_output,
)
from marketplace_execution.domain.pacing import Pacer
from marketplace_execution.domain.ports import AttemptCallback, JobResult, JobSpec
from marketplace_execution.domain.pricing import BudgetExhaustedError, usd
from marketplace_execution.domain.provider_calls import CallResult, LLMControls, ProviderCalls

__all__ = ["MAX_RATE_LIMITED", "AttemptRunner"]

MAX_RATE_LIMITED = 20
"""Uncharged (429) attempts one run makes at most before it gives up."""


@dataclass(slots=True)
class _Run:
    request: LLMRequest
    policy: RetryPolicy
    deadline: float | None
    number: int
    transient_failures: int
    models: tuple[str, ...]
    spent_nanos: int = 0
    model_index: int = 0
    rate_limited: int = 0
    fixable_failures: int = 0
    last_violations: tuple[Any, ...] | None = None
    attempts: list[AttemptView] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.models[self.model_index]

    @property
    def next_model(self) -> str | None:
        index = self.model_index + 1
        return self.models[index] if index < len(self.models) else None


@dataclass(frozen=True, slots=True)
class _Next:
    """What follows an attempt: nothing (``request`` None: a valid answer, or ``stop``
    ends the run), or another attempt asking ``request`` after ``delay`` (recorded
    with ``source``). The loop sleeps the delay itself when ``sleep`` (a backoff);
    the pacer pauses before a re-ask, the key's permit waits out a cooldown.
    ``fallback``: the next attempt asks the next model of the chain."""

    delay: float = 0.0
    source: DelaySource = DelaySource.NONE
    request: LLMRequest | None = None
    stop: AgentError | None = None
    sleep: bool = False
    fallback: bool = False


class AttemptRunner:
    """Runs one job to a valid answer or a final error (see the module docs)."""

    def __init__(
        self,
        provider: LLMProvider,
        pacer: Pacer | None = None,
        policy: RetryPolicy | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        metrics: LLMMetrics | None = None,
        controls: LLMControls | None = None,
        default_model: str = "",
    ) -> None:
        self.provider = provider
        self.policy = policy or RetryPolicy()
        self._clock: Clock = clock or SystemClock()
        self.pacer = pacer or Pacer(clock=self._clock)
        self._backoff = Backoff(
            self.policy.base_delay, self.policy.max_delay, rng or random.Random()
        )
        self.metrics: LLMMetrics = metrics or UncountedMetrics()
        if controls is None:
            limiter = ProviderLimiter(MemoryLimitState(clock=self._clock), clock=self._clock)
            controls = LLMControls(limiter=limiter)
        self.controls = controls
        self.default_model = default_model
        self.calls = ProviderCalls(provider, controls, self.metrics, clock=self._clock)
        self._log = get_logger(__name__).bind(provider=provider.name)

    async def run(
        self,
        job: JobSpec,
        *,
        previous: Sequence[AttemptView] = (),
        on_attempt: AttemptCallback | None = None,
    ) -> JobResult:
        """Ask until a valid answer or a final error; never raises an AgentError.

        Args:
            job: the prompt; its ``output_schema`` turns on validation.
            previous: attempts already made for this job (a resumed execution):
                numbering continues after them, they count against
                ``max_attempts`` and their cost against the cost cap, but at
                least one new call is made.
            on_attempt: awaited with each attempt, and whether another one
                follows, before the next starts.
        """
        policy = self._policy_for(job)
        try:
            schema = json.loads(job.output_schema) if job.output_schema else None
            validator = compile_schema(schema) if schema is not None else None
        except InvalidArgumentError as err:
            return JobResult(None, job.model, err)
        request = LLMRequest.from_prompt(job.prompt, output_schema=schema)
        deadline = None
        if policy.deadline is not None:
            deadline = self._clock.monotonic() + policy.deadline
        models = self.controls.chain(job.model or self.default_model)
        run = _Run(request, policy, deadline, len(previous), len(previous), models)
        run.spent_nanos = Usage.total(previous).cost_nanos
        if self._over_cost_cap(run):
            return JobResult(None, job.model, self._budget_exhausted(run))
        while True:
            run.number += 1
            call = await self._call(run, validator)
            run.spent_nanos += call.cost_nanos
            following = self._next(run, call)
            attempt = self._attempt(run, call, following)
            run.attempts.append(attempt)
            self._report(attempt, call, following)
            if on_attempt is not None:
                await on_attempt(attempt, following.request is not None)
            if call.error is None and call.response is not None:
                answer = call.response
                return JobResult(answer.text, answer.model or job.model, None, (*run.attempts,))
            if following.request is None:
                return JobResult(None, job.model, following.stop, (*run.attempts,))
            if following.sleep and following.delay > 0:
                await self._clock.sleep(following.delay)
            run.request = following.request
            if following.fallback:
                run.model_index += 1

    def _policy_for(self, job: JobSpec) -> RetryPolicy:
        """The runner's policy with the job's attempt budget and, when the caller
        waits a bounded time, a deadline no later than that."""
        deadline = self.policy.deadline
        if job.time_left is not None:
            deadline = job.time_left if deadline is None else min(deadline, job.time_left)
        return replace(self.policy, max_attempts=job.max_attempts, deadline=deadline)

    async def _call(self, run: _Run, validator: Validator | None) -> CallResult:
        """One attempt: pacing, the key's permit and the call (one call per attempt).

        Its ``waited`` is the pacing pause and the permit's wait; an answer that
        fails validation is its error.
        """
        max_cooldown = None
        if run.next_model is not None:
            max_cooldown = self.controls.fallback_after_cooldown
        async with self.pacer.pace() as paced:
            try:
                call = await self.calls.call(
                    run.request, run.model, run.deadline, max_cooldown=max_cooldown
                )
            except asyncio.CancelledError:
                self.metrics.count_attempt(self.provider.name, NO_ERROR, "cancelled")
                raise
        call = replace(call, waited=paced + call.waited)
        if call.response is None and call.error is None:
            # No call: the key cools down longer than the fallback allows.
            cooling = RateLimitedError(
                f"{self.calls.key(call.model)} cools down for {call.cooldown or 0:.1f} s",
                retry_after=call.cooldown,
            )
            return replace(call, exc=cooling, error=cooling)
        if call.response is None or validator is None:
            return call
        try:
            validate_output(call.response.text, validator)
        except (LLMFixableError, InvalidArgumentError) as invalid:
            return replace(call, exc=invalid, error=invalid)
        return call

    def _next(self, run: _Run, call: CallResult) -> _Next:
        error, exc = call.error, call.exc
        if error is None or exc is None:
            return _Next()
        if self._over_cost_cap(run):
            return _Next(stop=self._budget_exhausted(run))
        error_type = error_type_of(exc)
        if error_type is ErrorType.LLM_FIXABLE and isinstance(error, LLMFixableError):
            return self._reask(run, error, call)
        run.last_violations = None  # "twice in a row" means consecutive attempts
        if isinstance(error, PermitDeadlineError):
            return _Next(stop=error)
        if self._falls_back(run, exc, call):
            return _Next(request=run.request, fallback=True)
        if error_type is ErrorType.TRANSIENT:
            return self._retry(run, error, call)
        return _Next(stop=error)

    def _retry(self, run: _Run, error: AgentError, call: CallResult) -> _Next:
        """After a TRANSIENT error: the same request again, if the budgets allow,
        after the key's cooldown or the kit's wait rule (the server's delay, else
        full-jitter backoff), unless that delay is past the cap or the deadline."""
        if call.rate_limited:  # not charged: the limit is the key's, not this run's
            run.rate_limited += 1
            if run.rate_limited > MAX_RATE_LIMITED:
                return _Next(stop=error)
        else:
            run.transient_failures += 1
            if run.transient_failures >= run.policy.max_attempts:
                return _Next(stop=error)
            budget, key = self.controls.budget, self.calls.key(run.model)
            if budget is not None and not budget.try_retry(key):
                self.metrics.count_budget_exhausted(self.provider.name, run.model)
                refused = budget.exhausted(key)
                refused.__cause__ = error
                return _Next(stop=refused)
        if call.cooldown is not None:
            # The key cools down for every caller; the next permit waits it out.
            server = DelaySource.SERVER_RETRY_AFTER if call.server_delay else DelaySource.BACKOFF
            delay, source, sleep = call.cooldown, server, False
        else:
            plan = self._backoff.plan(run.transient_failures, error)
            delay, source, sleep = plan.delay, plan.source, True
        time_left = None if run.deadline is None else run.deadline - self._clock.monotonic()
        if not self._backoff.allows(delay, time_left):
            # docs/errors.md: a delay past the cap or the deadline is not waited
            # out; the error goes back now, carrying the delay for RetryInfo.
            error.retry_after = delay
            return _Next(stop=error)
        return _Next(delay, source, run.request, sleep=sleep)

    def _reask(self, run: _Run, error: LLMFixableError, call: CallResult) -> _Next:
        """After an invalid answer: the conversation with the answer and the
        violations fed back, after the pacer's pause, unless the re-asks are spent
        or the same violations came twice in a row."""
        violations = error.violations
        repeated = violations == run.last_violations
        run.last_violations = violations
        run.fixable_failures += 1
        if repeated or run.fixable_failures >= run.policy.max_llm_fixable_attempts:
            why = "the same validation error twice in a row" if repeated else "re-ask budget spent"
            final = LLMOutputInvalidError(
                f"the model's answer stayed invalid ({why}): {error.message}",
                violations=violations,
            )
            final.__cause__ = error
            return _Next(stop=final)
        answer = "" if call.response is None else call.response.text
        request = run.request.with_messages(
            ChatMessage("assistant", answer), ChatMessage("user", feedback_message(violations))
        )
        pause = self.pacer.config.delay
        return _Next(pause, DelaySource.PACING if pause > 0 else DelaySource.NONE, request)

    def _falls_back(self, run: _Run, exc: BaseException, call: CallResult) -> bool:
        """Whether the next model takes over: the model's own error, or a long cooldown."""
        to_model = run.next_model
        if to_model is None:
            return False
        limit = self.controls.fallback_after_cooldown
        cooling = call.cooldown is not None and call.cooldown > limit
        if not (cooling or self.provider.is_model_error(exc)):
            return False
        self.metrics.count_fallback(self.provider.name, run.model, to_model)
        self._log.warning("llm.fallback", model=run.model, to_model=to_model, cooling=cooling)
        return True

    def _over_cost_cap(self, run: _Run) -> bool:
        cap = self.controls.cost_cap_nanos
        return cap is not None and run.spent_nanos >= cap

    def _budget_exhausted(self, run: _Run) -> BudgetExhaustedError:
        cap = self.controls.cost_cap_nanos or 0
        return BudgetExhaustedError(
            f"the LLM calls cost {usd(run.spent_nanos):.6f} USD, "
            f"the cap per execution is {usd(cap):.6f} USD"
        )

    def _attempt(self, run: _Run, call: CallResult, following: _Next) -> AttemptView:
        """The attempt as the execution stores it."""
        error = following.stop if following.stop is not None else call.error
        usage = call.usage or LLMUsage()
        answered = "" if call.response is None else call.response.model
        return AttemptView(
            number=run.number,
            started_at=call.started_at,
            finished_at=call.finished_at,
            error_type=None if error is None else error.error_type,
            code="" if call.exc is None else failure_code(call.exc),
            message="" if error is None else error.message,
            retry_delay=following.delay,
            delay_source=following.source.value,
            pacing_delay=call.waited,
            model=answered or run.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_nanos=call.cost_nanos,
        )

    def _report(self, attempt: AttemptView, call: CallResult, following: _Next) -> None:
        """The attempt's log line, count and span."""
        if call.error is None:
            outcome = "succeeded"
        else:
            outcome = "failed" if following.stop is not None else "retried"
        error_type = NO_ERROR if call.error is None else call.error.error_type.value
        code = attempt.code or "OK"
        self.metrics.count_attempt(self.provider.name, error_type, outcome)
        fields: dict[str, Any] = {
            "attempt": attempt.number,
            "outcome": outcome,
            "error_type": error_type,
            "code": code,
            "delay": round(attempt.retry_delay, 3),
            "delay_source": attempt.delay_source,
            "paced": round(attempt.pacing_delay, 3),
            "model": attempt.model,
        }
        if call.usage is not None:
            fields["prompt_tokens"] = attempt.prompt_tokens
            fields["completion_tokens"] = attempt.completion_tokens
        if tracing.enabled():
            _trace(self.provider.name, fields, attempt, attempt.error_type is not None)
        if call.error is None:
            self._log.info("llm.attempt", **fields)
        elif attempt.error_type is ErrorType.FATAL:
            self._log.error("llm.attempt", message=attempt.message, exc_info=call.exc, **fields)
        else:
            self._log.warning("llm.attempt", message=attempt.message, **fields)


def _trace(provider: str, fields: dict[str, Any], attempt: AttemptView, failed: bool) -> None:
    """One ``llm.attempt`` span (a child of the run's span)."""
    attributes = {
        "llm.provider": provider,
        "llm.model": attempt.model,
        "llm.attempt": attempt.number,
        "llm.outcome": fields["outcome"],
        "llm.error_type": fields["error_type"],
        "llm.code": fields["code"],
        "llm.delay_seconds": attempt.retry_delay,
        "llm.delay_source": attempt.delay_source,
        "llm.pacing_delay_seconds": attempt.pacing_delay,
    }
    error = f"{fields['error_type']}: {fields['code']}" if failed else None
    tracing.record_span(
        "llm.attempt", attempt.started_at, attempt.finished_at, attributes, error=error
    )
