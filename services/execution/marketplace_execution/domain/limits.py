"""Shared, smooth limits per provider key (provider + model), and provider-wide cooldowns.

A provider limits an API key, not a process, and enforces requests per minute in
small slices (120 RPM is about 2 requests in any second). So every call to a
key first takes a *permit* from :class:`ProviderLimiter`, which spaces calls
evenly with GCRA (the generic cell rate algorithm, a leaky bucket kept as one
number per key, the "theoretical arrival time"):

* requests: each call costs ``interval = 60 / rpm`` seconds of the key's time;
  a call may start at ``max(tat, now) + interval - (burst + 1) * interval``,
  so after an idle spell ``burst + 1`` calls go at once and then one every
  ``interval``;
* tokens: each call costs ``estimated_tokens * 60 / tpm`` seconds; a call may
  start while the key's token debt (before it) is at most one second's worth of
  tokens, so an idle key lets any call go at once; after the call the estimate
  is replaced by the reported usage (``settle``);
* cooldown: a 429 (or 503) seen by any caller pauses every call to the key
  until the time the provider gave (Retry-After), or for an exponential,
  jittered, capped time when it gave none. Setting a cooldown invalidates
  every reservation made before it (an ``epoch`` counter), so waiting callers
  line up again after the cooldown instead of arriving together.

The state lives behind :class:`LimitState`: in memory for one process
(:class:`MemoryLimitState`, used on SQLite), or in the execution database so
every replica shares it (``storage.limits``, one short statement per
permit). A reservation is made in one step, and the caller sleeps until its
slot; a caller that slept checks the cooldown once more before calling.

Waiting for a permit is not an attempt: it spends no retry budget, but it does
count toward the caller's deadline (a wait past it fails at once,
:class:`PermitDeadlineError`, with the wait as ``retry_after``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from marketplace_common.errors import DeadlineExceededError
from marketplace_common.retrying import Clock, SystemClock

CHECK_AHEAD = 0.1
"""Seconds before its slot a waiting caller checks the key's cooldown once more."""


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """The limits of one provider key; None means no limit of that kind."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    burst: int = 0

    def __post_init__(self) -> None:
        if self.requests_per_minute is not None and self.requests_per_minute <= 0:
            raise ValueError("requests_per_minute must be positive")
        if self.tokens_per_minute is not None and self.tokens_per_minute <= 0:
            raise ValueError("tokens_per_minute must be positive")
        if self.burst < 0:
            raise ValueError("burst must not be negative")


@dataclass(frozen=True, slots=True)
class CooldownPolicy:
    """Cooldowns without a server-given delay: ``min(cap, base * 2**streak)``, jittered
    down to half (``streak`` counts the key's cooldowns since its last success)."""

    base: float = 1.0
    cap: float = 30.0


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """Limits for every key: ``default`` unless ``per_model`` names the model.

    ``margin`` stretches every interval by that fraction (0.05: 5 % slower than
    the configured rate), so calls that leave a little late or early (event loop
    lag, the network) do not trip a limit the provider counts in small slices.
    """

    default: KeyLimits = field(default_factory=KeyLimits)
    per_model: Mapping[str, KeyLimits] = field(default_factory=dict)
    margin: float = 0.05
    cooldown: CooldownPolicy = field(default_factory=CooldownPolicy)

    def for_model(self, model: str) -> KeyLimits:
        return self.per_model.get(model, self.default)


@dataclass(frozen=True, slots=True)
class Cost:
    """What one reservation costs, in seconds of the key's time, and its tolerances.

    ``request_cost``/``token_cost`` advance the key's two arrival times;
    a call may start ``request_tolerance``/``token_tolerance`` before them.
    """

    request_cost: float = 0.0
    request_tolerance: float = 0.0
    token_cost: float = 0.0
    token_tolerance: float = 0.0


@dataclass(frozen=True, slots=True)
class Reservation:
    """The answer to a reservation: how long to wait, and the key's cooldown state."""

    wait: float
    cooldown_left: float
    epoch: int
    streak: int


@dataclass(frozen=True, slots=True)
class CooldownState:
    """A key's cooldown now: seconds left (<= 0 when none), its epoch and streak."""

    left: float
    epoch: int
    streak: int = 0


class LimitState(Protocol):
    """The per-key state every caller of a key shares (in memory or in the database).

    Times are seconds on the state's own clock; callers only see differences.
    """

    async def reserve(self, key: str, cost: Cost) -> Reservation:
        """Books the next slot of ``key`` (after any cooldown); returns the wait for it."""
        ...

    async def cooldown(self, key: str) -> CooldownState:
        """The key's cooldown and epoch, read without booking anything."""
        ...

    async def start_cooldown(
        self, key: str, seconds: float | None, policy: CooldownPolicy
    ) -> float:
        """Pauses ``key`` for ``seconds`` (None: exponential with jitter, capped);
        invalidates earlier reservations; returns the seconds the cooldown lasts."""
        ...

    async def settle(self, key: str, token_seconds: float) -> None:
        """After a success: corrects the token time by ``token_seconds`` (the reported
        usage minus the estimate, may be negative) and resets the cooldown streak."""
        ...


class PermitDeadlineError(DeadlineExceededError):
    """The permit to call a provider key would come after the caller's deadline."""

    default_reason = "PERMIT_DEADLINE_EXCEEDED"


@dataclass(frozen=True, slots=True)
class Permit:
    """A granted permit: the seconds waited for it, and what the next ``settle`` needs."""

    key: str
    waited: float
    estimated_tokens: int
    streak: int


def estimate_tokens(text_chars: int) -> int:
    """A prompt's tokens before the call: about four characters a token, rounded up."""
    return max(1, math.ceil(text_chars / 4))


class ProviderLimiter:
    """Permits, cooldowns and settling for every provider key (see the module docs)."""

    def __init__(
        self,
        state: LimitState,
        settings: LimitSettings | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.state = state
        self.settings = settings or LimitSettings()
        self._clock: Clock = clock or SystemClock()
        # Cooldowns this process saw, known at once (before the shared state has them).
        self._local_until: dict[str, float] = {}

    @staticmethod
    def key(provider: str, model: str) -> str:
        return f"{provider}:{model}"

    def _cost(self, model: str, tokens: int) -> Cost:
        limits = self.settings.for_model(model)
        stretch = 1.0 + self.settings.margin
        cost = Cost()
        if limits.requests_per_minute is not None:
            interval = 60.0 / limits.requests_per_minute * stretch
            cost = Cost(interval, (limits.burst + 1) * interval)
        if limits.tokens_per_minute is not None:
            per_token = 60.0 / limits.tokens_per_minute * stretch
            capacity = max(limits.tokens_per_minute / 60.0, 1.0) * per_token
            token_cost = tokens * per_token
            # The call's own tokens are tolerated too: an idle key lets any call go
            # at once, and the calls after it wait until its debt is paid down.
            cost = Cost(
                cost.request_cost, cost.request_tolerance, token_cost, token_cost + capacity
            )
        return cost

    async def permit(
        self, provider: str, model: str, tokens: int, deadline: float | None
    ) -> Permit:
        """Waits for the key's next slot; raises PermitDeadlineError past ``deadline``
        (a ``clock.monotonic()`` value) without waiting."""
        key = self.key(provider, model)
        cost = self._cost(model, tokens)
        started = self._clock.monotonic()
        while True:
            if cost == Cost():
                # No limit on this key: nothing to book, only a cooldown to respect
                # (a read, no row lock: unlimited keys do not serialize on it).
                pending = await self.state.cooldown(key)
                local = self._local_until.get(key, 0.0) - self._clock.monotonic()
                wait = max(pending.left, local, 0.0)
                if wait <= 0:
                    waited = self._clock.monotonic() - started
                    return Permit(key, max(0.0, waited), tokens, pending.streak)
                if deadline is not None and self._clock.monotonic() + wait > deadline:
                    raise PermitDeadlineError(
                        f"{key} cools down for {wait:.2f} s, past the deadline", retry_after=wait
                    )
                await self._clock.sleep(wait)
                continue
            booked = await self.state.reserve(key, cost)
            wait = max(booked.wait, booked.cooldown_left, 0.0)
            if deadline is not None and self._clock.monotonic() + wait > deadline:
                raise PermitDeadlineError(
                    f"the next call to {key} may start in {wait:.2f} s, after the deadline",
                    retry_after=wait,
                )
            if wait > 0:
                slot = self._clock.monotonic() + wait
                # A cooldown started meanwhile (on any replica; it moves the key's
                # epoch) voids the slot: book again. Checked shortly *before* the
                # slot, so the read does not delay the call itself.
                await self._clock.sleep(max(0.0, wait - CHECK_AHEAD))
                if (await self.state.cooldown(key)).epoch != booked.epoch:
                    continue
                rest = slot - self._clock.monotonic()
                if rest > 0:
                    await self._clock.sleep(rest)
            # A 429 this process received moments ago may not be stored yet: it
            # holds this call back at once, then the slot is booked again.
            local = self._local_until.get(key, 0.0) - self._clock.monotonic()
            if local > 0:
                await self._clock.sleep(local)
                continue
            waited = self._clock.monotonic() - started
            return Permit(key, max(0.0, waited), tokens, booked.streak)

    async def cool_down(self, key: str, seconds: float | None) -> float:
        """A 429/503 was seen on ``key``: pause it for every caller; returns the pause.

        This process's own callers hold back at once (for ``seconds``, or the
        shortest exponential pause), before the shared state is written."""
        until = self._clock.monotonic() + (
            seconds if seconds is not None else self.settings.cooldown.base / 2
        )
        self._local_until[key] = max(self._local_until.get(key, 0.0), until)
        return await self.state.start_cooldown(key, seconds, self.settings.cooldown)

    async def settle(self, permit: Permit, model: str, used_tokens: int | None) -> None:
        """After a success: the reported tokens replace the estimate; the streak resets."""
        limits = self.settings.for_model(model)
        correction = 0.0
        if limits.tokens_per_minute is not None and used_tokens is not None:
            per_token = 60.0 / limits.tokens_per_minute * (1.0 + self.settings.margin)
            correction = (used_tokens - permit.estimated_tokens) * per_token
        if correction or permit.streak:
            await self.state.settle(permit.key, correction)


@dataclass(slots=True)
class _KeyState:
    request_tat: float
    token_tat: float
    cooldown_until: float = 0.0
    streak: int = 0
    epoch: int = 0


class MemoryLimitState:
    """:class:`LimitState` for one process (SQLite deployments, unit tests)."""

    def __init__(self, *, clock: Clock | None = None, rng: random.Random | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._keys: dict[str, _KeyState] = {}

    def _get(self, key: str) -> _KeyState:
        state = self._keys.get(key)
        if state is None:
            now = self._clock.monotonic()
            state = self._keys[key] = _KeyState(now, now)
        return state

    async def reserve(self, key: str, cost: Cost) -> Reservation:
        now = self._clock.monotonic()
        s = self._get(key)
        s.request_tat = max(s.request_tat, now, s.cooldown_until) + cost.request_cost
        s.token_tat = max(s.token_tat, now, s.cooldown_until) + cost.token_cost
        wait = max(s.request_tat - cost.request_tolerance, s.token_tat - cost.token_tolerance)
        return Reservation(wait - now, s.cooldown_until - now, s.epoch, s.streak)

    async def cooldown(self, key: str) -> CooldownState:
        s = self._get(key)
        return CooldownState(s.cooldown_until - self._clock.monotonic(), s.epoch, s.streak)

    async def start_cooldown(
        self, key: str, seconds: float | None, policy: CooldownPolicy
    ) -> float:
        now = self._clock.monotonic()
        s = self._get(key)
        if seconds is None:
            seconds = min(policy.cap, policy.base * 2.0**s.streak) * self._rng.uniform(0.5, 1.0)
        s.cooldown_until = max(s.cooldown_until, now + seconds)
        s.request_tat = s.token_tat = s.cooldown_until
        s.streak += 1
        s.epoch += 1
        return s.cooldown_until - now

    async def settle(self, key: str, token_seconds: float) -> None:
        s = self._get(key)
        s.token_tat += token_seconds
        s.streak = 0
