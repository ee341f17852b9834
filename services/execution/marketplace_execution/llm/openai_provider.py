"""Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama, llama.cpp server).

The official ``openai`` client runs with ``max_retries=0``: the attempt loop
decides about retries. The client's exceptions are classified here
(``classify.as_agent_error``): the attempt loop gets an ``AgentError`` of the
right type, with the delay the server asked for (``Retry-After``,
``retry-after-ms``) in ``retry_after`` and the HTTP status (or the client's
exception class) in ``origin_code``; the client's exception is its cause.

The API key is held only by the client; it is never logged or shown in repr.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import openai
from marketplace_common.classify import as_agent_error
from marketplace_common.errors import AgentError, FailedPreconditionError, UnavailableError
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from openai.types.chat.completion_create_params import ResponseFormat

from marketplace_execution.domain.llm import LLMProvider, LLMRequest, LLMResponse, LLMUsage

_MODEL_ERROR_CODES = frozenset({"model_not_found", "context_length_exceeded"})
_PLACEHOLDER_KEY = "not-needed"  # local servers (vLLM, Ollama) ignore the key; the client wants one


class OpenAIProvider(LLMProvider):
    """Chat completions through ``openai.AsyncOpenAI``, with optional JSON Schema output."""

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        name: str = "openai",
    ) -> None:
        """Args:
        model: the default model when a request names none.
        base_url: the endpoint, e.g. ``http://127.0.0.1:8000/v1``; None for OpenAI's.
        api_key: the bearer token; None for endpoints without authentication.
        timeout: seconds per call when the request sets none.
        name: the ``provider`` label of metrics and logs.
        """
        self._model = model
        self._base_url = base_url
        self._api_key = api_key
        self._timeout = timeout
        self._name = name
        self._client: openai.AsyncOpenAI | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return (
            f"OpenAIProvider(name={self._name!r}, model={self._model!r}, "
            f"base_url={self._base_url!r})"
        )

    async def complete_async(self, request: LLMRequest) -> LLMResponse:
        return await self._complete_with(self._client_for_running_loop(), request)

    async def _complete_with(self, client: openai.AsyncOpenAI, request: LLMRequest) -> LLMResponse:
        try:
            return await self._ask(client, request)
        except AgentError:
            raise
        except Exception as exc:
            raise as_agent_error(exc) from exc

    def is_model_error(self, exc: BaseException) -> bool:
        """404 (no such model, or no access to it) and ``model_not_found`` or
        ``context_length_exceeded`` codes belong to the model asked (the client's
        error is the cause of the AgentError raised)."""
        cause = exc.__cause__ if isinstance(exc, AgentError) else exc
        if not isinstance(cause, openai.APIStatusError):
            return False
        return cause.status_code == 404 or cause.code in _MODEL_ERROR_CODES

    async def aclose(self) -> None:
        client, self._client, self._client_loop = self._client, None, None
        if client is not None:
            await client.close()

    async def _complete_on_private_loop(self, request: LLMRequest) -> LLMResponse:
        # The shared client's connection pool belongs to the service's loop.
        client = self._new_client()
        try:
            return await self._complete_with(client, request)
        finally:
            await client.close()

    def _new_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=self._api_key or _PLACEHOLDER_KEY,
            base_url=self._base_url,
            timeout=self._timeout,
            max_retries=0,
        )

    def _client_for_running_loop(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            # A loop that went away (tests, asyncio.run in scripts) leaves a
            # client whose pool cannot be closed from here; drop it.
            self._client = self._new_client()
            self._client_loop = loop
        return self._client

    async def _ask(self, client: openai.AsyncOpenAI, request: LLMRequest) -> LLMResponse:
        messages: list[ChatCompletionMessageParam] = [
            {"role": m.role, "content": m.content}  # type: ignore[misc]
            for m in request.messages
        ]
        # The configured per-call timeout is a ceiling; a request's own (the time
        # left before its job's deadline) can only shorten it.
        timeout = self._timeout if request.timeout is None else min(request.timeout, self._timeout)
        model = request.model or self._model
        if request.output_schema is None:
            completion = await client.chat.completions.create(
                model=model, messages=messages, timeout=timeout
            )
        else:
            completion = await client.chat.completions.create(
                model=model,
                messages=messages,
                timeout=timeout,
                response_format=_response_format(request.output_schema),
            )
        return _to_response(completion, model)


def _response_format(schema: Mapping[str, Any]) -> ResponseFormat:
    # strict=False: strict mode rejects schemas that do not list every property
    # as required; we validate the answer ourselves anyway.
    return {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": dict(schema), "strict": False},
    }


def _to_response(completion: ChatCompletion, requested_model: str) -> LLMResponse:
    if not completion.choices:
        raise UnavailableError("the LLM provider returned no choices")
    message = completion.choices[0].message
    if message.content is None:
        refusal = message.refusal or "no content"
        raise FailedPreconditionError(f"the model gave no answer: {refusal[:200]}")
    usage = None
    if completion.usage is not None:
        usage = LLMUsage(
            prompt_tokens=completion.usage.prompt_tokens,
            completion_tokens=completion.usage.completion_tokens,
            total_tokens=completion.usage.total_tokens,
        )
    return LLMResponse(text=message.content, model=completion.model or requested_model, usage=usage)
