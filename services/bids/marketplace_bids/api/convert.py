"""Conversions between protobuf messages and the domain, at the edge.

Requests go in as plain mappings (validated by the domain's pydantic models);
domain records come out as protobuf messages.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from marketplace.bids.v1 import bids_pb2
from marketplace.common.v1 import common_pb2
from marketplace_common.errors import ErrorType

from marketplace_bids.domain.delivery import DeliveryResponse
from marketplace_bids.domain.models import Bid, BidEvent, IssuedToken, Task, TaskEvent
from marketplace_bids.domain.values import BidStatus, Money, TaskStatus

_TIMESTAMP = "google.protobuf.Timestamp"
_DURATION = "google.protobuf.Duration"
_MONEY = "marketplace.common.v1.Money"


def _enum_value(enum: Any, number: int) -> Any:
    """An enum as its short name (``TASK_STATUS_PENDING`` -> ``PENDING``); 0 is None.

    Numbers the enum does not know are passed on as is, for validation to reject.
    """
    if number == 0:
        return None
    value = enum.values_by_number.get(number)
    if value is None:
        return number
    prefix = enum.values_by_number[0].name.removesuffix("UNSPECIFIED")
    return value.name.removeprefix(prefix)


class OutOfRange:
    """A Timestamp or Duration that has no Python value (beyond year 1..9999, nanos
    out of range, a Duration with mixed signs): validation rejects it as not a
    datetime / timedelta."""

    def __repr__(self) -> str:
        return "<out of range>"


def _message_value(value: Message) -> Any:
    name = value.DESCRIPTOR.full_name
    try:
        if name == _TIMESTAMP:
            return value.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined]
        if name == _DURATION:
            # duration.proto: seconds and nanos of one sign; mixed is not a duration.
            if value.seconds * value.nanos < 0:  # type: ignore[attr-defined]
                return OutOfRange()
            return value.ToTimedelta()  # type: ignore[attr-defined]
    except (ValueError, OverflowError):
        return OutOfRange()
    if name == _MONEY:
        return {"currency_code": value.currency_code, "units": value.units, "nanos": value.nanos}  # type: ignore[attr-defined]
    raise TypeError(f"no conversion for {name}")


def request_fields(message: Message) -> dict[str, Any]:
    """A request's fields as a mapping for the domain's request models.

    Unset message fields are left out (so a model's default or "required"
    applies), enums become their short names.
    """
    data: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if message.HasField(field.name):
                data[field.name] = _message_value(value)
        elif field.type == FieldDescriptor.TYPE_ENUM:
            if field.enum_type is None:  # pragma: no cover - every enum field has one
                raise TypeError(field.name)
            converted = _enum_value(field.enum_type, value)
            if converted is not None:
                data[field.name] = converted
        else:
            data[field.name] = value
    return data


def timestamp(value: datetime) -> Timestamp:
    """A protobuf Timestamp for an aware datetime."""
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def money(value: Money) -> common_pb2.Money:
    return common_pb2.Money(currency_code=value.currency_code, units=value.units, nanos=value.nanos)


_TASK_STATUS: dict[TaskStatus, bids_pb2.TaskStatus] = {
    TaskStatus.PENDING: bids_pb2.TASK_STATUS_PENDING,
    TaskStatus.PROCESSING: bids_pb2.TASK_STATUS_PROCESSING,
    TaskStatus.COMPLETED: bids_pb2.TASK_STATUS_COMPLETED,
    TaskStatus.FAILED: bids_pb2.TASK_STATUS_FAILED,
}
_BID_STATUS: dict[BidStatus, bids_pb2.BidStatus] = {
    BidStatus.PENDING: bids_pb2.BID_STATUS_PENDING,
    BidStatus.WITHDRAWN: bids_pb2.BID_STATUS_WITHDRAWN,
    BidStatus.ACCEPTED: bids_pb2.BID_STATUS_ACCEPTED,
    BidStatus.REJECTED: bids_pb2.BID_STATUS_REJECTED,
}
_ERROR_TYPE: dict[ErrorType, common_pb2.ErrorType] = {
    ErrorType.TRANSIENT: common_pb2.ERROR_TYPE_TRANSIENT,
    ErrorType.PERMANENT: common_pb2.ERROR_TYPE_PERMANENT,
    ErrorType.FATAL: common_pb2.ERROR_TYPE_FATAL,
    ErrorType.LLM_FIXABLE: common_pb2.ERROR_TYPE_LLM_FIXABLE,
}


def task_status(value: TaskStatus) -> bids_pb2.TaskStatus:
    return _TASK_STATUS[value]


def bid_status(value: BidStatus) -> bids_pb2.BidStatus:
    return _BID_STATUS[value]


def error_type(value: ErrorType | None) -> common_pb2.ErrorType:
    return common_pb2.ERROR_TYPE_UNSPECIFIED if value is None else _ERROR_TYPE[value]


def task(value: Task) -> bids_pb2.Task:
    return bids_pb2.Task(
        task_id=value.task_id,
        client_email=value.client_email,
        title=value.title,
        description=value.description,
        budget=money(value.budget),
        status=task_status(value.status),
        bid_id=value.bid_id or "",
        agent_id=value.agent_id or "",
        execution_id=value.execution_id or "",
        result=value.result or "",
        error_type=error_type(value.error_type),
        created_at=timestamp(value.created_at),
        updated_at=timestamp(value.updated_at),
    )


def bid(value: Bid) -> bids_pb2.Bid:
    return bids_pb2.Bid(
        bid_id=value.bid_id,
        marketplace=value.marketplace,
        job_id=value.job_id,
        agent_id=value.agent_id,
        amount=money(value.amount),
        proposal=value.proposal,
        status=bid_status(value.status),
        created_at=timestamp(value.created_at),
        updated_at=timestamp(value.updated_at),
    )


def bid_event(value: BidEvent) -> bids_pb2.BidEvent:
    return bids_pb2.BidEvent(
        event_id=value.event_id,
        bid_id=value.bid_id,
        previous_status=bid_status(value.previous_status),
        new_status=bid_status(value.new_status),
        reason=value.reason,
        actor=value.actor,
        created_at=timestamp(value.created_at),
    )


def task_event(value: TaskEvent) -> bids_pb2.TaskEvent:
    return bids_pb2.TaskEvent(
        event_id=value.event_id,
        task_id=value.task_id,
        previous_status=task_status(value.previous_status),
        new_status=task_status(value.new_status),
        execution_id=value.execution_id,
        actor=value.actor,
        created_at=timestamp(value.created_at),
    )


def delivery(value: DeliveryResponse) -> bids_pb2.Delivery:
    return bids_pb2.Delivery(
        task_id=value.task_id,
        client_email=value.address.email,
        result=value.result,
        amount=money(value.amount),
        delivered_at=timestamp(value.delivered_at.at),
    )


def issued_token(value: IssuedToken) -> bids_pb2.CreateDeliveryTokenResponse:
    return bids_pb2.CreateDeliveryTokenResponse(
        token=value.token, expires_at=timestamp(value.expires_at)
    )
