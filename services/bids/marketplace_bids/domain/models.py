"""The bids domain's records: what repositories return and services hand back.

They are pydantic models so an idempotent call can store its response as JSON
and replay it byte for byte.
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar

from marketplace_common.errors import ErrorType
from pydantic import AwareDatetime, BaseModel, ConfigDict

from marketplace_bids.domain.values import BidStatus, Money, TaskStatus


class Record(BaseModel):
    """Base of the immutable domain records."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Task(Record):
    """Work ordered by a client."""

    task_id: str
    client_email: str
    title: str
    description: str
    budget: Money
    status: TaskStatus
    bid_id: str | None = None
    agent_id: str | None = None
    execution_id: str | None = None
    result: str | None = None
    error_type: ErrorType | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime


class Bid(Record):
    """An agent's offer on a job of an outside marketplace."""

    bid_id: str
    marketplace: str
    job_id: str
    agent_id: str
    amount: Money
    proposal: str
    status: BidStatus
    created_at: AwareDatetime
    updated_at: AwareDatetime


class BidEvent(Record):
    """One transition of a bid in the audit trail."""

    event_id: str
    bid_id: str
    previous_status: BidStatus
    new_status: BidStatus
    reason: str
    actor: str
    created_at: AwareDatetime


class TaskEvent(Record):
    """One transition of a task (the execution service's idempotency trail)."""

    event_id: str
    task_id: str
    previous_status: TaskStatus
    new_status: TaskStatus
    execution_id: str
    actor: str
    created_at: AwareDatetime


class BidTransition(Record):
    """The result of WithdrawBid/RejectBid (task unset) and AcceptBid (task set)."""

    bid: Bid
    event: BidEvent
    task: Task | None = None


class DeliveryToken(Record):
    """A stored delivery token: only the hash of the secret is kept."""

    token_hash: str
    task_id: str
    expires_at: AwareDatetime
    created_at: AwareDatetime


class IssuedToken(Record):
    """The one time a delivery token's secret is shown."""

    token: str
    expires_at: datetime


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list, with the token for the next one (empty at the end)."""

    model_config = ConfigDict(frozen=True)

    items: list[T]
    next_page_token: str = ""
