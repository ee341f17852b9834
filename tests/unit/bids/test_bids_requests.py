"""Validation at the edge: every violated field is listed, by its proto path."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from marketplace_bids.domain import requests as r
from marketplace_bids.domain.delivery import (
    DeliveryAddress,
    DeliveryAmount,
    DeliveryResponse,
    DeliveryTimestamp,
    DeliveryTokenRequest,
)
from marketplace_bids.domain.values import Money
from marketplace_common.errors import InvalidArgumentError

UUID = str(uuid.uuid4())


def fields(model: type[Any], data: dict[str, Any]) -> set[str]:
    with pytest.raises(InvalidArgumentError) as caught:
        r.parse(model, data)
    return {v.field for v in caught.value.violations}


def money(units: int = 1, nanos: int = 0, currency: str = "EUR") -> dict[str, Any]:
    return {"currency_code": currency, "units": units, "nanos": nanos}


def test_create_task_lists_every_bad_field() -> None:
    bad = {
        "request_id": "x",
        "client_email": "not-an-email",
        "title": " ",
        "description": "d" * 10_001,
        "budget": money(-1, 5, "eur"),
    }
    assert fields(r.CreateTaskRequest, bad) == {
        "request_id",
        "client_email",
        "title",
        "description",
        "budget.currency_code",
        "budget.nanos",
    }


def test_missing_money_is_required() -> None:
    data = {"request_id": UUID, "client_email": "a@example.com", "title": "t"}
    assert fields(r.CreateTaskRequest, data) == {"budget"}


@pytest.mark.parametrize(
    ("amount", "field"),
    [
        (money(0, 0), "budget"),
        (money(-2, 0), "budget"),
        (money(1, 1_000_000_000), "budget.nanos"),
        (money(1, -1), "budget.nanos"),
        (money(1, 0, "XXX"), "budget.currency_code"),
    ],
)
def test_money_rules(amount: dict[str, Any], field: str) -> None:
    data = {"request_id": UUID, "client_email": "a@example.com", "title": "t", "budget": amount}
    assert fields(r.CreateTaskRequest, data) == {field}


def test_valid_money_keeps_its_value() -> None:
    assert Money(currency_code="JPY", units=12, nanos=500_000_000).as_decimal() == 12.5


def test_email_is_lowercased() -> None:
    data = {"request_id": UUID, "client_email": "Alice@Example.COM", "title": "t"}
    req = r.parse(r.CreateTaskRequest, {**data, "budget": money()})
    assert req.client_email == "alice@example.com"


@pytest.mark.parametrize(("size", "expected"), [(0, 50), (1, 1), (500, 500), (10_000, 500)])
def test_page_size_default_and_cap(size: int, expected: int) -> None:
    assert r.parse(r.ListBidsRequest, {"page_size": size}).page_size == expected


def test_negative_page_size_is_invalid() -> None:
    assert fields(r.ListBidsRequest, {"page_size": -1}) == {"page_size"}


def test_time_range_must_be_ordered() -> None:
    now = datetime.now(UTC)
    data = {"created_after": now, "created_before": now - timedelta(seconds=1)}
    assert fields(r.ListTasksRequest, data) == {"created_before"}


def test_reversed_time_range_is_reported_with_other_bad_fields() -> None:
    now = datetime.now(UTC)
    data = {
        "client_email": "no-at",
        "created_after": now,
        "created_before": now - timedelta(seconds=1),
        "page_size": -1,
    }
    assert fields(r.ListTasksRequest, data) == {"client_email", "created_before", "page_size"}


def test_malformed_page_token_is_reported_with_other_bad_fields() -> None:
    data = {"bid_id": UUID, "page_size": -1, "page_token": "!!!"}
    assert fields(r.ListBidEventsRequest, data) == {"page_size", "page_token"}
    assert fields(r.ListBidsRequest, {"page_size": -1, "page_token": "A" * 3000}) == {
        "page_size",
        "page_token",
    }


def test_naive_timestamps_are_invalid() -> None:
    assert fields(r.ListTasksRequest, {"created_after": datetime(2024, 1, 1)}) == {"created_after"}


def test_empty_filters_mean_any() -> None:
    req = r.parse(r.ListBidsRequest, {"marketplace": "", "job_id": "", "agent_id": ""})
    assert (req.marketplace, req.job_id, req.agent_id, req.status) == (None, None, None, None)


def test_transition_ids_must_be_uuids() -> None:
    assert fields(r.WithdrawBidRequest, {"bid_id": "1", "event_id": "2", "reason": "x" * 1001}) == {
        "bid_id",
        "event_id",
        "reason",
    }


def test_fail_task_needs_an_error_type() -> None:
    data = {"task_id": UUID, "execution_id": UUID, "event_id": UUID}
    assert fields(r.FailTaskRequest, data) == {"error_type"}


def test_place_bid_identifiers_are_checked() -> None:
    data = {
        "request_id": UUID,
        "marketplace": "",
        "job_id": "has space",
        "agent_id": "a" * 129,
        "amount": money(),
    }
    assert fields(r.PlaceBidRequest, data) == {"marketplace", "job_id", "agent_id"}


@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(days=31)])
def test_delivery_token_ttl_bounds(ttl: timedelta) -> None:
    assert fields(DeliveryTokenRequest, {"task_id": UUID, "ttl": ttl}) == {"ttl"}


def test_delivery_token_ttl_defaults_to_a_day() -> None:
    assert r.parse(DeliveryTokenRequest, {"task_id": UUID}).ttl == timedelta(hours=24)


def test_delivery_response_checks_address_amount_and_timestamp() -> None:
    data = {
        "task_id": UUID,
        "address": {"email": "nope"},
        "result": "r",
        "amount": money(0, 0),
        "delivered_at": {"at": datetime(2024, 1, 1)},
    }
    assert fields(DeliveryResponse, data) == {"address.email", "amount", "delivered_at.at"}


def test_delivery_timestamp_from_a_clock_ahead_is_accepted() -> None:
    ahead = datetime.now(UTC) + timedelta(hours=1)
    assert DeliveryTimestamp(at=ahead).at == ahead


def test_bad_currency_and_zero_amount_are_both_reported() -> None:
    data = {"request_id": UUID, "client_email": "a@example.com", "title": "t"}
    for amount in (money(0, 0, "eur"), money(-3, -5, "XYZ")):
        budget = fields(r.CreateTaskRequest, {**data, "budget": amount})
        assert budget == {"budget.currency_code", "budget"}


def test_mixed_signs_report_the_sign_alone() -> None:
    data = {"request_id": UUID, "client_email": "a@example.com", "title": "t"}
    assert fields(r.CreateTaskRequest, {**data, "budget": money(-1, 5, "eur")}) == {
        "budget.currency_code",
        "budget.nanos",
    }


def test_delivery_response_accepts_good_values() -> None:
    response = DeliveryResponse(
        task_id=UUID,
        address=DeliveryAddress(email="a@example.com"),
        result="r",
        amount=DeliveryAmount(currency_code="EUR", units=3, nanos=0),
        delivered_at=DeliveryTimestamp(at=datetime.now(UTC)),
    )
    assert response.delivered_at.at.tzinfo is UTC
