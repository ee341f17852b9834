"""Envoy-style retry budgets: retries to a provider key capped at a fraction of its calls.

Each execution has its own attempt budget, but during a provider outage every
execution retrying on its own multiplies the load on the provider. So the
retries *to a key* are also capped: over the last ``window`` seconds, retries
may be at most ``ratio`` of all calls made to the key (first calls and retries),
with ``min_retries`` always allowed so that a quiet key can still retry
(Envoy's ``budget_percent`` and ``min_retry_concurrency``).

A retry over budget is not made: the run fails at once with
:class:`RetryBudgetExhaustedError` (TRANSIENT, reason ``RETRY_BUDGET_EXHAUSTED``).
Each replica keeps its own budget over its own calls, so the fleet's retries
stay within the same fraction of the fleet's calls.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from marketplace_common.errors import TransientError
from marketplace_common.retrying import Clock, SystemClock


@dataclass(frozen=True, slots=True)
class RetryBudgetConfig:
    """ratio: retries as a fraction of calls; window: seconds; min_retries: always allowed."""

    ratio: float = 0.2
    window: float = 10.0
    min_retries: int = 10

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError("ratio must be between 0 and 1")
        if self.window <= 0:
            raise ValueError("window must be positive")
        if self.min_retries < 0:
            raise ValueError("min_retries must not be negative")


class RetryBudgetExhaustedError(TransientError):
    """A retry to a provider key would pass the key's retry budget."""

    default_reason = "RETRY_BUDGET_EXHAUSTED"


class RetryBudget:
    """Counts calls and retries per key over a sliding window (one instance per process)."""

    def __init__(self, config: RetryBudgetConfig | None = None, *, clock: Clock | None = None):
        self.config = config or RetryBudgetConfig()
        self._clock: Clock = clock or SystemClock()
        self._calls: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self._retries: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )

    def _trim(self, key: str) -> tuple[int, int]:
        horizon = self._clock.monotonic() - self.config.window
        for times in (self._calls[key], self._retries[key]):
            while times and times[0] <= horizon:
                times.popleft()
        return len(self._calls[key]), len(self._retries[key])

    def record_call(self, key: str) -> None:
        """Counts one call to ``key`` (a first call or a retry)."""
        self._calls[key].append(self._clock.monotonic())

    def try_retry(self, key: str) -> bool:
        """Takes one retry of ``key``'s budget if it has one; False when spent.

        The retry is counted when it is granted, not when its call is made, so
        runs deciding at the same moment cannot all take the last one.
        """
        calls, retries = self._trim(key)
        if retries >= self.config.min_retries and retries + 1 > self.config.ratio * (calls + 1):
            return False
        self._retries[key].append(self._clock.monotonic())
        return True

    def exhausted(self, key: str) -> RetryBudgetExhaustedError:
        """The error for a retry the budget refused."""
        calls, retries = self._trim(key)
        return RetryBudgetExhaustedError(
            f"retries to {key} are over budget: {retries} of the last {calls} calls in "
            f"{self.config.window:g} s were retries (budget {self.config.ratio:.0%})",
            retry_after=self.config.window,
        )
