"""GrpcBidsGateway keeps at most ``max_in_flight`` calls on the wire; the rest wait in
the process, and a call's deadline starts when it is sent."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from marketplace_execution.api.bids_client import GrpcBidsGateway


class _Channel:
    """Stands in for a grpc.aio channel: every method answers after ``delay``."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.in_flight = 0
        self.most = 0
        self.timeouts: list[float] = []

    def unary_unary(self, *_args: Any, **_kwargs: Any) -> Any:
        async def call(_request: Any, *, timeout: float) -> Any:  # noqa: ASYNC109  # grpc's keyword
            self.timeouts.append(timeout)
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            try:
                await asyncio.sleep(self.delay)
            finally:
                self.in_flight -= 1

        return call


async def test_calls_beyond_max_in_flight_wait_their_turn() -> None:
    channel = _Channel(delay=0.05)
    gateway = GrpcBidsGateway(channel, timeout=0.5, max_in_flight=3)
    await asyncio.gather(
        *(gateway.start_task(uuid.uuid4(), uuid.uuid4(), f"e{i}") for i in range(12))
    )
    assert channel.most == 3
    # Four rounds of 50 ms: each call still had its whole deadline when it was sent.
    assert channel.timeouts == [0.5] * 12


async def test_without_a_limit_every_call_goes_at_once() -> None:
    channel = _Channel(delay=0.05)
    gateway = GrpcBidsGateway(channel, timeout=0.5)
    await asyncio.gather(
        *(gateway.start_task(uuid.uuid4(), uuid.uuid4(), f"e{i}") for i in range(12))
    )
    assert channel.most == 12
