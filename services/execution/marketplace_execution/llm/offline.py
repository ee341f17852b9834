"""The offline provider: deterministic, no network, the embedded default.

It answers from the prompt (free text, or the minimal JSON instance of an
``output_schema``) and says in its model name that it is offline. For demos
and tests of the retry machinery it can inject failures at configured rates:

* ``permanent`` is a property of the request, as in real life (a request
  that is rejected is rejected again): a conversation whose first user
  message draws "permanent" fails with InvalidArgumentError on every call.
* ``transient`` and ``rate_limited`` are drawn per call (the infrastructure
  fails now and then), so a plain retry may succeed.
* ``malformed`` is drawn per conversation *content*, like a model decoding
  deterministically (temperature 0): the same messages get the same bad
  answer again, while a re-ask that appends the validation errors is a new
  conversation and a new draw. It only applies to requests with an
  ``output_schema``: free text cannot be malformed.

Every draw comes from a ``random.Random`` seeded with the configured seed and
the conversation (plus, for per-call draws, how many calls that conversation
has made), so the same requests give the same failures whatever the
interleaving of concurrent calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from marketplace_common.errors import InvalidArgumentError, RateLimitedError, UnavailableError

from marketplace_execution.domain.llm import LLMProvider, LLMRequest, LLMResponse, LLMUsage

OFFLINE_MODEL = "offline-echo-1"
_MALFORMED_ANSWERS = ('{"answer": "truncated', "null")


@dataclass(frozen=True, slots=True)
class OfflineFaults:
    """Failure rates, each 0..1 (transient + rate_limited at most 1), and the 429's delay."""

    transient: float = 0.0
    rate_limited: float = 0.0
    permanent: float = 0.0
    malformed: float = 0.0
    retry_after: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        rates = (self.transient, self.rate_limited, self.permanent, self.malformed)
        if any(not 0.0 <= rate <= 1.0 for rate in rates):
            raise ValueError("failure rates must be between 0 and 1")
        if self.transient + self.rate_limited > 1.0:
            raise ValueError("transient + rate_limited must not exceed 1")
        if self.retry_after < 0:
            raise ValueError("retry_after must not be negative")


class OfflineProvider(LLMProvider):
    """Deterministic answers with optional, seeded failure injection."""

    def __init__(self, faults: OfflineFaults | None = None, *, latency: float = 0.0) -> None:
        self._faults = faults or OfflineFaults()
        self._latency = latency
        self._calls: Counter[str] = Counter()

    @property
    def name(self) -> str:
        return "offline"

    @property
    def calls(self) -> int:
        """How many calls this provider has answered or failed."""
        return self._calls.total()

    async def complete_async(self, request: LLMRequest) -> LLMResponse:
        key = _conversation_key(request)
        call_number = self._calls[key]
        self._calls[key] += 1
        if self._latency > 0:
            await asyncio.sleep(self._latency)
        self._inject_failure(key, call_number)
        text = self._answer(request)
        prompt_tokens = sum(len(m.content.split()) for m in request.messages)
        completion_tokens = len(text.split())
        usage = LLMUsage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)
        return LLMResponse(text=text, model=OFFLINE_MODEL, usage=usage)

    def _inject_failure(self, key: str, call_number: int) -> None:
        faults = self._faults
        if faults.permanent and random.Random(f"{faults.seed}:{key}").random() < faults.permanent:
            raise InvalidArgumentError("offline provider: injected permanent failure")
        draw = _call_draw(faults.seed, key, call_number)
        if draw < faults.transient:
            raise UnavailableError("offline provider: injected transient failure")
        if draw < faults.transient + faults.rate_limited:
            raise RateLimitedError(
                "offline provider: injected rate limit", retry_after=faults.retry_after
            )

    def _answer(self, request: LLMRequest) -> str:
        if request.output_schema is None:
            prompt = " ".join(request.last_user_message.split())
            return f"Offline answer to: {prompt[:500]}"
        content = hashlib.sha256(repr(request.messages).encode()).hexdigest()
        draw = random.Random(f"{self._faults.seed}:malformed:{content}")
        if draw.random() < self._faults.malformed:
            return draw.choice(_MALFORMED_ANSWERS)
        summary = " ".join(request.last_user_message.split())[:200]
        return json.dumps(minimal_instance(request.output_schema, summary))


def _conversation_key(request: LLMRequest) -> str:
    first_user = next((m.content for m in request.messages if m.role == "user"), "")
    return hashlib.sha256(first_user.encode()).hexdigest()[:32]


def _call_draw(seed: int, key: str, call_number: int) -> float:
    return random.Random(f"{seed}:{key}:{call_number}").random()


def minimal_instance(schema: Mapping[str, Any], text: str = "") -> Any:
    """A small JSON value that satisfies the common JSON Schema keywords.

    Honours const, enum, type (the first listed), required properties,
    minItems, minLength/maxLength and minimum. Strings carry ``text`` (cut to
    fit) so answers are derived from the prompt. Keywords it does not model
    (pattern, format, oneOf, ...) may yield an instance that fails validation,
    which the attempt loop then reports like any invalid model output.
    """
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if options:
            return minimal_instance(options[0], text)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    return _minimal_of_type(str(kind), schema, text)


def _minimal_of_type(kind: str, schema: Mapping[str, Any], text: str) -> Any:
    if kind == "object":
        properties: Mapping[str, Any] = schema.get("properties", {})
        return {
            name: minimal_instance(properties.get(name, {}), text)
            for name in schema.get("required", list(properties))
        }
    if kind == "array":
        item_schema: Mapping[str, Any] = schema.get("items", {})
        return [minimal_instance(item_schema, text) for _ in range(schema.get("minItems", 0))]
    if kind in ("integer", "number"):
        minimum = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        value = max(0, minimum + (1 if "exclusiveMinimum" in schema else 0))
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return _fit_string(schema, text)


def _fit_string(schema: Mapping[str, Any], text: str) -> str:
    value = text or "offline"
    max_length = schema.get("maxLength")
    if max_length is not None:
        value = value[:max_length]
    min_length = schema.get("minLength", 0)
    if len(value) < min_length:
        value = value + "x" * (min_length - len(value))
    return value
