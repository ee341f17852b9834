"""Token prices per model, and the cost cap of one execution.

Prices are USD per million tokens, prompt and completion apart, as providers
publish them. Costs are kept as whole nano-USD (10^-9 USD): exact to add up,
and the ``Money`` of the API (units + nanos) without rounding twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from marketplace_common.errors import PermanentError

NANOS_PER_USD = 1_000_000_000
_NANOS_PER_TOKEN_AT_ONE_USD_PER_MILLION = Decimal(NANOS_PER_USD) / Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million prompt tokens and per million completion tokens."""

    prompt: Decimal
    completion: Decimal


@dataclass(frozen=True, slots=True)
class Prices:
    """The configured prices; a model without one costs nothing (it is not capped)."""

    per_model: Mapping[str, ModelPrice] = field(default_factory=dict)

    def cost_nanos(self, model: str, prompt_tokens: int, completion_tokens: int) -> int:
        price = self.per_model.get(model)
        if price is None:
            return 0
        usd_per_million = prompt_tokens * price.prompt + completion_tokens * price.completion
        nanos = usd_per_million * _NANOS_PER_TOKEN_AT_ONE_USD_PER_MILLION
        return int(nanos.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def usd(nanos: int) -> float:
    """Nano-USD as USD (for metrics and messages)."""
    return nanos / NANOS_PER_USD


class BudgetExhaustedError(PermanentError):
    """The execution's LLM calls cost as much as its cap allows: no further call starts."""

    default_reason = "BUDGET_EXHAUSTED"
