"""Running a service's main coroutine on uvloop.

uvloop (libuv) runs the same asyncio programs with a cheaper loop: its
transports, callback scheduling and polling are C, so the per-I/O overhead of
a busy service (every database round trip, every gRPC call) drops. grpc.aio
and asyncpg both run on it. Tests keep the default loop (pytest-asyncio);
the console scripts and the benchmark use :func:`run`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on a new uvloop event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
