"""The LLM provider port: the conversation, the answer, the usage, and the
interface every backend in ``marketplace_execution.llm`` implements.

A provider does one call and nothing more: it never retries and never sleeps.
The attempt loop (``marketplace_execution.domain.attempt_loop``) decides what
to do with a failure, from the exception the provider raised: providers raise
``AgentError`` subclasses only (their client's exceptions classified with
``marketplace_common.classify.as_agent_error``), with any server-directed delay
in ``AgentError.retry_after``.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """What to ask a model.

    Attributes:
        messages: the conversation, oldest first.
        model: the model name; None means the provider's configured default.
        output_schema: a JSON Schema the answer must satisfy (the answer is then
            JSON text); None for free text.
        timeout: seconds this call may take at most (the attempt loop sets the
            time left before the job's deadline); a provider's own configured
            per-call timeout still applies when it is shorter. None: only that.
    """

    messages: tuple[ChatMessage, ...]
    model: str | None = None
    output_schema: Mapping[str, Any] | None = None
    timeout: float | None = None

    def __init__(
        self,
        messages: Sequence[ChatMessage],
        model: str | None = None,
        output_schema: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        object.__setattr__(self, "messages", tuple(messages))
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "output_schema", output_schema)
        object.__setattr__(self, "timeout", timeout)

    @classmethod
    def from_prompt(
        cls,
        prompt: str,
        *,
        system: str | None = None,
        model: str | None = None,
        output_schema: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> LLMRequest:
        """A one-question conversation (with an optional system message)."""
        messages = [ChatMessage("system", system)] if system else []
        messages.append(ChatMessage("user", prompt))
        return cls(messages, model=model, output_schema=output_schema, timeout=timeout)

    def with_messages(self, *extra: ChatMessage) -> LLMRequest:
        """The same request with ``extra`` appended to the conversation."""
        return replace(self, messages=(*self.messages, *extra))

    @property
    def last_user_message(self) -> str:
        """The content of the last user message ("" when there is none)."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""


@dataclass(frozen=True, slots=True)
class LLMUsage:
    """Token counts, when the provider reports them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, slots=True)
class LLMResponse:
    """A model's answer: its text, the model that actually answered, and usage if known."""

    text: str
    model: str
    usage: LLMUsage | None = field(default=None)


class LLMProvider(abc.ABC):
    """One LLM backend. Subclasses implement ``name`` and ``complete_async``."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Short provider name, used as the ``provider`` label of metrics ("openai", "offline")."""

    @abc.abstractmethod
    async def complete_async(self, request: LLMRequest) -> LLMResponse:
        """One call to the model. Raises on any failure; never retries, never sleeps."""

    def is_model_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` (raised by ``complete_async``) is an error of the model asked
        rather than of the request or the provider: an unknown model, a context
        window too small for the prompt. The attempt loop then moves to the next model
        of the request's fallback chain. The default knows none."""
        return False

    async def aclose(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections; the default has nothing to release."""

    def complete(self, request: LLMRequest) -> LLMResponse:
        """Synchronous ``complete_async`` for scripts. It blocks its calling thread.

        Without a running event loop it runs the call with ``asyncio.run``.
        Called from a thread that runs an event loop, it warns (RuntimeWarning)
        and runs the call on a private event loop in a worker thread, so the
        caller's loop is never re-entered and this cannot deadlock or fail with
        "asyncio.run() cannot be called from a running event loop". It still
        holds the calling thread until the answer arrives, and so it blocks
        that thread's event loop for the whole LLM call: nothing else on the
        loop runs meanwhile. Code running on a loop must await
        ``complete_async`` instead; the warning says so.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._complete_on_private_loop(request))
        warnings.warn(
            f"{type(self).__name__}.complete() called from a running event loop; "
            "await complete_async() instead (the call runs in a worker thread meanwhile)",
            RuntimeWarning,
            stacklevel=2,
        )
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="llm-sync") as pool:
            return pool.submit(asyncio.run, self._complete_on_private_loop(request)).result()

    async def _complete_on_private_loop(self, request: LLMRequest) -> LLMResponse:
        """The coroutine ``complete`` runs on its own loop.

        Providers whose clients are bound to one event loop (connection pools)
        override this to use a client of their own for that loop.
        """
        return await self.complete_async(request)
