"""Fixtures of the provider-level tests: the fake OpenAI server (``fake_openai``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_openai import FakeOpenAIServer, ReceivedRequest, Reply

__all__ = ["FakeOpenAIServer", "ReceivedRequest", "Reply", "openai_server"]


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    server = FakeOpenAIServer()
    server.start()
    yield server
    server.stop()
