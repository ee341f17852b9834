"""Delivery models: asking for a token, and what a redeemed token returns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from marketplace_bids.domain.requests import Email
from marketplace_bids.domain.values import Money, ResultText, Uuid

DEFAULT_TOKEN_TTL = timedelta(hours=24)
MAX_TOKEN_TTL = timedelta(days=30)
# 32 random bytes, URL-safe base64 without padding, is 43 characters.
TOKEN_BYTES = 32


class DeliveryAddress(BaseModel):
    """Where a delivery goes: the ordering client's e-mail address."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    email: Email


class DeliveryAmount(Money):
    """The amount a delivery settles: the task budget (a positive Money)."""


class DeliveryTimestamp(BaseModel):
    """When a delivery happened: time-zone aware, normalised to UTC.

    The value is server data (the task's completion time, stamped by whichever
    replica completed it), so it is not checked against this replica's clock:
    with clock skew between replicas it may lie in the future, and refusing it
    would blame the caller (INVALID_ARGUMENT) for the servers' clocks.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: AwareDatetime

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)


class DeliveryTokenRequest(BaseModel):
    """CreateDeliveryToken's input: a task id and how long the token lives."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_id: Uuid
    ttl: timedelta = DEFAULT_TOKEN_TTL

    @field_validator("ttl")
    @classmethod
    def _ttl_range(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be positive")
        if value > MAX_TOKEN_TTL:
            raise ValueError("must be at most 30 days")
        return value


class GetDeliveryRequest(BaseModel):
    """GetDelivery's input: the token shown once by CreateDeliveryToken."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: Annotated[str, Field(min_length=1, max_length=256)]


class DeliveryResponse(BaseModel):
    """What a redeemed delivery token returns."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_id: Uuid
    address: DeliveryAddress
    result: ResultText
    amount: DeliveryAmount
    delivered_at: DeliveryTimestamp
