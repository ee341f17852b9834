"""In-process publish/subscribe of execution events, keyed by execution_id.

Watchers in this process hear of a change at once; changes made by another
replica are picked up by the watcher's periodic poll (see ``service.watch``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from marketplace_execution.domain.models import ExecutionEvent


class EventBus:
    """Fan-out of ExecutionEvents to the subscribers of one execution (never blocks)."""

    def __init__(self) -> None:
        self._subscribers: defaultdict[uuid.UUID, set[asyncio.Queue[ExecutionEvent]]] = defaultdict(
            set
        )

    @contextmanager
    def subscribe(self, execution_id: uuid.UUID) -> Iterator[asyncio.Queue[ExecutionEvent]]:
        """A queue receiving every event of ``execution_id`` published while inside the block."""
        queue: asyncio.Queue[ExecutionEvent] = asyncio.Queue()
        self._subscribers[execution_id].add(queue)
        try:
            yield queue
        finally:
            subscribers = self._subscribers.get(execution_id)
            if subscribers is not None:
                subscribers.discard(queue)
                if not subscribers:
                    del self._subscribers[execution_id]

    def publish(self, event: ExecutionEvent) -> None:
        """Delivers ``event`` to the current subscribers of its execution."""
        for queue in self._subscribers.get(event.execution.execution_id, ()):
            queue.put_nowait(event)

    def subscriber_count(self, execution_id: uuid.UUID) -> int:
        """How many watchers listen to ``execution_id`` (for tests and metrics)."""
        return len(self._subscribers.get(execution_id, ()))
