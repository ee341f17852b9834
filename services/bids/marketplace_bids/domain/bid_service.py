"""Bids: place, read, list, and the locked transitions with their audit events."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from marketplace_common.auth import Principal, Role
from marketplace_common.clock import utc_now
from marketplace_common.logging import get_logger
from marketplace_common.paging import PageCursor, decode_page_token, filters_digest, next_page

from marketplace_bids.domain import access
from marketplace_bids.domain.errors import (
    BidAlreadyActiveError,
    BidNotFoundError,
    InvalidTransitionError,
)
from marketplace_bids.domain.idempotency import (
    EVENT_SCOPE,
    PLACE_BID_SCOPE,
    IdempotencyKey,
    fingerprint,
    model_codec,
)
from marketplace_bids.domain.models import Bid, BidEvent, BidTransition, Page, Task
from marketplace_bids.domain.ports import (
    PENDING_BID_KEY,
    BidFilter,
    Repositories,
    UnitOfWork,
)
from marketplace_bids.domain.requests import (
    AcceptBidRequest,
    GetBidRequest,
    ListBidEventsRequest,
    ListBidsRequest,
    PlaceBidRequest,
    RejectBidRequest,
    Request,
    WithdrawBidRequest,
)
from marketplace_bids.domain.values import BidStatus, TaskStatus

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class _Transition:
    """One bid transition to run: who, which request, to what status."""

    method: str
    bid_id: str
    event_id: str
    target: BidStatus
    reason: str
    request: Request
    accept: AcceptBidRequest | None = None


class BidService:
    """The bid rules; every public method is one transaction."""

    def __init__(self, uow: UnitOfWork, *, clock: Clock = utc_now) -> None:
        self._uow = uow
        self._now = clock
        self._log = get_logger(__name__)

    async def place_bid(self, principal: Principal, req: PlaceBidRequest) -> Bid:
        """Place a PENDING bid; a repeat of request_id returns the first result."""
        access.require_agent(principal, "place a bid", req.agent_id)
        fp = fingerprint("PlaceBid", principal, req)
        key = IdempotencyKey(PLACE_BID_SCOPE, req.request_id, fp, model_codec(Bid), "request_id")

        async def work(repos: Repositories) -> Bid:
            first = await key.replay(repos)
            if first is not None:
                return first
            if await repos.bids.find_pending(req.marketplace, req.job_id, req.agent_id):
                # The pending bid may be this very request's, committed by a concurrent
                # twin since the lookup above (both rows commit together): look again.
                first = await key.replay(repos)
                if first is not None:
                    return first
                raise BidAlreadyActiveError(req.marketplace, req.job_id, req.agent_id)
            new = self._new_bid(req)
            bid, created = await key.write_once(
                repos,
                new,
                lambda: repos.bids.add(new),
                refusal=lambda dup: (
                    BidAlreadyActiveError(req.marketplace, req.job_id, req.agent_id)
                    if dup.key == PENDING_BID_KEY
                    else None
                ),
            )
            if created:
                self._log.info("bid.placed", bid_id=bid.bid_id, agent_id=bid.agent_id)
            return bid

        return await self._uow.run(work)

    def _new_bid(self, req: PlaceBidRequest) -> Bid:
        now = self._now()
        return Bid(
            bid_id=str(uuid.uuid4()),
            marketplace=req.marketplace,
            job_id=req.job_id,
            agent_id=req.agent_id,
            amount=req.amount,
            proposal=req.proposal,
            status=BidStatus.PENDING,
            created_at=now,
            updated_at=now,
        )

    async def get_bid(self, principal: Principal, req: GetBidRequest) -> Bid:
        """One bid, if the caller may see it."""

        async def work(repos: Repositories) -> Bid:
            bid = await repos.bids.get(req.bid_id)
            if bid is None:
                raise BidNotFoundError(req.bid_id)
            access.check_can_see_bid(principal, bid)
            return bid

        return await self._uow.run(work, write=False)

    async def list_bids(self, principal: Principal, req: ListBidsRequest) -> Page[Bid]:
        """Bids newest first; agents see only their own."""
        filters = BidFilter(
            marketplace=req.marketplace,
            job_id=req.job_id,
            agent_id=access.bid_list_scope(principal, req.agent_id),
            status=req.status,
        )
        scope = filters_digest("bids", {k: getattr(filters, k) for k in filters.__slots__})
        after = decode_page_token(req.page_token, scope)

        async def work(repos: Repositories) -> list[Bid]:
            return await repos.bids.list(filters, after, req.page_size + 1)

        rows = await self._uow.run(work, write=False)
        items, token = next_page(
            rows, req.page_size, scope, lambda b: PageCursor(b.created_at, uuid.UUID(b.bid_id))
        )
        return Page(items=items, next_page_token=token)

    async def list_bid_events(
        self, principal: Principal, req: ListBidEventsRequest
    ) -> Page[BidEvent]:
        """A bid's audit trail, oldest first."""
        scope = filters_digest("bid_events", {"bid_id": req.bid_id})
        after = decode_page_token(req.page_token, scope)

        async def work(repos: Repositories) -> list[BidEvent]:
            bid = await repos.bids.get(req.bid_id)
            if bid is None:
                raise BidNotFoundError(req.bid_id)
            access.check_can_see_bid(principal, bid)
            return await repos.bid_events.list(req.bid_id, after, req.page_size + 1)

        rows = await self._uow.run(work, write=False)
        items, token = next_page(
            rows, req.page_size, scope, lambda e: PageCursor(e.created_at, uuid.UUID(e.event_id))
        )
        return Page(items=items, next_page_token=token)

    async def withdraw_bid(self, principal: Principal, req: WithdrawBidRequest) -> BidTransition:
        """PENDING -> WITHDRAWN, by the bidding agent (or an admin)."""
        step = _Transition(
            "WithdrawBid", req.bid_id, req.event_id, BidStatus.WITHDRAWN, req.reason, req
        )
        return await self._transition(principal, step)

    async def reject_bid(self, principal: Principal, req: RejectBidRequest) -> BidTransition:
        """PENDING -> REJECTED, by a client or an admin."""
        access.check_role(principal, "reject bids", Role.CLIENT)
        step = _Transition(
            "RejectBid", req.bid_id, req.event_id, BidStatus.REJECTED, req.reason, req
        )
        return await self._transition(principal, step)

    async def accept_bid(self, principal: Principal, req: AcceptBidRequest) -> BidTransition:
        """PENDING -> ACCEPTED, creating the task (budget = bid amount) in the same transaction."""
        access.require_client(principal, "accept a bid", req.client_email)
        step = _Transition(
            "AcceptBid", req.bid_id, req.event_id, BidStatus.ACCEPTED, "accepted", req, accept=req
        )
        return await self._transition(principal, step)

    async def _transition(self, principal: Principal, step: _Transition) -> BidTransition:
        fp = fingerprint(step.method, principal, step.request)
        key = IdempotencyKey(EVENT_SCOPE, step.event_id, fp, model_codec(BidTransition), "event_id")

        async def work(repos: Repositories) -> tuple[BidTransition, BidStatus | None]:
            bid = await repos.bids.get(step.bid_id, lock=True)
            if bid is None:
                raise BidNotFoundError(step.bid_id)
            if step.target is BidStatus.WITHDRAWN:
                access.check_is_bids_agent(principal, bid)
            first = await key.replay(repos)
            if first is not None:
                return first, None
            if bid.status is not BidStatus.PENDING:
                raise InvalidTransitionError(
                    "bid", bid.bid_id, bid.status.value, step.target.value, "BID_NOT_PENDING"
                )
            result = self._apply(principal, step, bid)

            async def write() -> None:
                await repos.bids.update(result.bid)
                if result.task is not None:
                    await repos.tasks.add(result.task)
                await repos.bid_events.add(result.event)

            answer, written = await key.write_once(repos, result, write)
            return answer, bid.status if written else None

        result, previous = await self._uow.run(work)
        if previous is not None:
            self._log.info(
                f"bid.{step.target.value.lower()}",
                bid_id=step.bid_id,
                event_id=step.event_id,
                previous_status=previous.value,
                task_id=result.task.task_id if result.task else None,
            )
        return result

    def _apply(self, principal: Principal, step: _Transition, bid: Bid) -> BidTransition:
        now = self._now()
        new_bid = bid.model_copy(update={"status": step.target, "updated_at": now})
        event = BidEvent(
            event_id=step.event_id,
            bid_id=bid.bid_id,
            previous_status=bid.status,
            new_status=step.target,
            reason=step.reason,
            actor=access.actor_name(principal),
            created_at=now,
        )
        task = None
        if step.accept is not None:
            task = Task(
                task_id=str(uuid.uuid4()),
                client_email=step.accept.client_email,
                title=step.accept.title,
                description=step.accept.description,
                budget=bid.amount,
                status=TaskStatus.PENDING,
                bid_id=bid.bid_id,
                agent_id=bid.agent_id,
                created_at=now,
                updated_at=now,
            )
        return BidTransition(bid=new_bid, event=event, task=task)
