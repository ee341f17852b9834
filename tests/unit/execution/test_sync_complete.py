"""LLMProvider.complete(): the synchronous form for scripts."""

from __future__ import annotations

import asyncio
import threading

import pytest
from marketplace_execution.domain.llm import LLMProvider, LLMRequest, LLMResponse
from marketplace_execution.llm.offline import OfflineProvider


class ThreadRecordingProvider(LLMProvider):
    """Answers with the thread and loop the call ran on."""

    def __init__(self) -> None:
        self.loops: list[asyncio.AbstractEventLoop] = []

    @property
    def name(self) -> str:
        return "recording"

    async def complete_async(self, request: LLMRequest) -> LLMResponse:
        await asyncio.sleep(0.01)
        self.loops.append(asyncio.get_running_loop())
        return LLMResponse(text=threading.current_thread().name, model="m")


def test_complete_outside_a_loop_answers_without_a_warning() -> None:
    response = OfflineProvider().complete(LLMRequest.from_prompt("hello"))

    assert "hello" in response.text


async def test_complete_inside_a_running_loop_warns() -> None:
    with pytest.warns(RuntimeWarning, match="complete_async"):
        response = OfflineProvider().complete(LLMRequest.from_prompt("hello"))

    assert "hello" in response.text


async def test_complete_inside_a_running_loop_runs_on_a_private_loop_in_a_worker() -> None:
    provider = ThreadRecordingProvider()

    with pytest.warns(RuntimeWarning):
        response = provider.complete(LLMRequest.from_prompt("hello"))

    assert response.text != threading.current_thread().name
    assert provider.loops[0] is not asyncio.get_running_loop()


class SlowProvider(LLMProvider):
    """Answers after ``seconds`` of asyncio sleep."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    @property
    def name(self) -> str:
        return "slow"

    async def complete_async(self, request: LLMRequest) -> LLMResponse:
        await asyncio.sleep(self.seconds)
        return LLMResponse(text="done", model="m")


async def test_complete_inside_a_running_loop_holds_the_calling_thread_and_its_loop() -> None:
    # As documented: the sync form blocks its caller, so the caller's loop runs nothing.
    ticks: list[int] = []

    async def ticker() -> None:
        while True:
            ticks.append(1)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    before = len(ticks)
    with pytest.warns(RuntimeWarning):
        SlowProvider(0.3).complete(LLMRequest.from_prompt("hello"))
    after = len(ticks)
    task.cancel()
    assert after == before
