"""Deliveries: short-lived bearer tokens for a completed task's result."""

from __future__ import annotations

import hashlib
import secrets

from marketplace_common.auth import Principal
from marketplace_common.clock import utc_now
from marketplace_common.logging import get_logger

from marketplace_bids.domain import access
from marketplace_bids.domain.bid_service import Clock
from marketplace_bids.domain.delivery import (
    TOKEN_BYTES,
    DeliveryAddress,
    DeliveryAmount,
    DeliveryResponse,
    DeliveryTimestamp,
    DeliveryTokenRequest,
    GetDeliveryRequest,
)
from marketplace_bids.domain.errors import (
    DeliveryNotFoundError,
    TaskNotCompletedError,
    TaskNotFoundError,
)
from marketplace_bids.domain.models import DeliveryToken, IssuedToken
from marketplace_bids.domain.ports import Repositories, UnitOfWork
from marketplace_bids.domain.values import TaskStatus


def hash_delivery_token(token: str) -> str:
    """The stored form of a delivery token: hex SHA-256 (the token itself is never stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


class DeliveryService:
    """Issues and redeems delivery tokens."""

    def __init__(self, uow: UnitOfWork, *, clock: Clock = utc_now) -> None:
        self._uow = uow
        self._now = clock
        self._log = get_logger(__name__)

    async def create_token(self, principal: Principal, req: DeliveryTokenRequest) -> IssuedToken:
        """A new token for a COMPLETED task, for its client (or an admin). Shown once."""
        token = secrets.token_urlsafe(TOKEN_BYTES)

        async def work(repos: Repositories) -> IssuedToken:
            task = await repos.tasks.get(req.task_id)
            if task is None:
                raise TaskNotFoundError(req.task_id)
            access.check_is_tasks_client(principal, task)
            if task.status is not TaskStatus.COMPLETED:
                raise TaskNotCompletedError(task.task_id, task.status.value)
            now = self._now()
            record = DeliveryToken(
                token_hash=hash_delivery_token(token),
                task_id=task.task_id,
                expires_at=now + req.ttl,
                created_at=now,
            )
            await repos.delivery_tokens.add(record)
            return IssuedToken(token=token, expires_at=record.expires_at)

        issued = await self._uow.run(work)
        self._log.info("delivery.token_issued", task_id=req.task_id, expires_at=issued.expires_at)
        return issued

    async def get_delivery(self, principal: Principal, req: GetDeliveryRequest) -> DeliveryResponse:
        """The delivery behind a token; unknown and expired tokens look the same."""
        digest = hash_delivery_token(req.token)

        async def work(repos: Repositories) -> DeliveryResponse:
            record = await repos.delivery_tokens.get(digest)
            if record is None or record.expires_at <= self._now():
                raise DeliveryNotFoundError()
            task = await repos.tasks.get(record.task_id)
            if task is None or task.status is not TaskStatus.COMPLETED:
                raise DeliveryNotFoundError()
            # Someone else's token answers like an unknown one: no oracle.
            if not access.may_redeem_delivery(principal, task):
                raise DeliveryNotFoundError()
            return DeliveryResponse(
                task_id=task.task_id,
                address=DeliveryAddress(email=task.client_email),
                result=task.result or "",
                amount=DeliveryAmount.model_validate(task.budget.model_dump()),
                delivered_at=DeliveryTimestamp(at=task.updated_at),
            )

        delivery = await self._uow.run(work, write=False)
        self._log.info("delivery.redeemed", task_id=delivery.task_id, by=principal.role.value)
        return delivery

    async def revoke_token(self, principal: Principal, req: GetDeliveryRequest) -> str:
        """Delete a live token, for its task's client (or an admin); the task id.

        Unknown, expired, already revoked and someone else's tokens all answer
        DELIVERY_NOT_FOUND, as GetDelivery does: nothing tells them apart.
        """
        digest = hash_delivery_token(req.token)

        async def work(repos: Repositories) -> str:
            record = await repos.delivery_tokens.get(digest)
            if record is None or record.expires_at <= self._now():
                raise DeliveryNotFoundError()
            task = await repos.tasks.get(record.task_id)
            if task is None or not access.may_redeem_delivery(principal, task):
                raise DeliveryNotFoundError()
            if not await repos.delivery_tokens.delete(digest):
                raise DeliveryNotFoundError()  # revoked concurrently
            return task.task_id

        task_id = await self._uow.run(work)
        self._log.info("delivery.token_revoked", task_id=task_id, by=principal.role.value)
        return task_id
