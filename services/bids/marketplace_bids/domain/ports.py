"""What the domain needs from storage: Protocols the storage layer implements.

Repositories never commit. One RPC is one transaction: a service hands a
function to :meth:`UnitOfWork.run`, which opens the transaction, builds the
repositories on it, and commits when the function returns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from marketplace_common.idempotency import DuplicateKeyError as DuplicateKeyError
from marketplace_common.idempotency import IdempotencyRepository
from marketplace_common.paging import PageCursor

from marketplace_bids.domain.models import Bid, BidEvent, DeliveryToken, Task, TaskEvent
from marketplace_bids.domain.values import BidStatus, TaskStatus

T = TypeVar("T")

#: The logical name of the one-PENDING-bid-per-(marketplace, job, agent) uniqueness rule.
PENDING_BID_KEY = "uq_bids_one_pending_per_job_agent"


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """ListTasks filters, combined with AND; None means any."""

    client_email: str | None = None
    status: TaskStatus | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class BidFilter:
    """ListBids filters, combined with AND; None means any."""

    marketplace: str | None = None
    job_id: str | None = None
    agent_id: str | None = None
    status: BidStatus | None = None


class TaskRepository(Protocol):
    async def get(self, task_id: str, *, lock: bool = False) -> Task | None: ...
    async def add(self, task: Task) -> None: ...
    async def update(self, task: Task) -> None: ...
    async def list(
        self, filters: TaskFilter, after: PageCursor | None, limit: int
    ) -> list[Task]: ...


class BidRepository(Protocol):
    async def get(self, bid_id: str, *, lock: bool = False) -> Bid | None: ...
    async def find_pending(self, marketplace: str, job_id: str, agent_id: str) -> Bid | None: ...
    async def add(self, bid: Bid) -> None: ...
    async def update(self, bid: Bid) -> None: ...
    async def list(self, filters: BidFilter, after: PageCursor | None, limit: int) -> list[Bid]: ...


class BidEventRepository(Protocol):
    async def add(self, event: BidEvent) -> None: ...
    async def list(self, bid_id: str, after: PageCursor | None, limit: int) -> list[BidEvent]: ...


class TaskEventRepository(Protocol):
    async def add(self, event: TaskEvent) -> None: ...
    async def list(self, task_id: str, after: PageCursor | None, limit: int) -> list[TaskEvent]: ...


class DeliveryTokenRepository(Protocol):
    async def add(self, token: DeliveryToken) -> None: ...
    async def get(self, token_hash: str) -> DeliveryToken | None: ...
    async def delete(self, token_hash: str) -> bool: ...


class Repositories(Protocol):
    """The repositories of one open transaction."""

    @property
    def tasks(self) -> TaskRepository: ...
    @property
    def bids(self) -> BidRepository: ...
    @property
    def bid_events(self) -> BidEventRepository: ...
    @property
    def task_events(self) -> TaskEventRepository: ...
    @property
    def idempotency(self) -> IdempotencyRepository: ...
    @property
    def delivery_tokens(self) -> DeliveryTokenRepository: ...

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A nested transaction that rolls back alone on error.

        A uniqueness violation inside it is raised as :class:`DuplicateKeyError`
        after the rollback, leaving the outer transaction usable.
        """
        ...


class UnitOfWork(Protocol):
    """Runs one RPC's work in one transaction."""

    async def run(self, fn: Callable[[Repositories], Awaitable[T]], *, write: bool = True) -> T: ...
