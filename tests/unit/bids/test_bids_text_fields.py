"""Free text at the edge: NUL is refused in every text field (PostgreSQL text cannot hold it),
people's text also refuses other control characters (not tab and newlines) and bidirectional
controls, identifiers are whole-string slugs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from marketplace_bids.domain import requests as r
from marketplace_bids.domain.values import MAX_RESULT, MAX_TEXT
from marketplace_common.errors import InvalidArgumentError

UUID = str(uuid.uuid4())
MONEY = {"currency_code": "EUR", "units": 1, "nanos": 0}

BASE: dict[type[Any], dict[str, Any]] = {
    r.CreateTaskRequest: {
        "request_id": UUID,
        "client_email": "a@example.com",
        "title": "t",
        "description": "d",
        "budget": MONEY,
    },
    r.PlaceBidRequest: {
        "request_id": UUID,
        "marketplace": "m",
        "job_id": "j",
        "agent_id": "a",
        "amount": MONEY,
        "proposal": "p",
    },
    r.WithdrawBidRequest: {"bid_id": UUID, "event_id": UUID, "reason": "r"},
    r.RejectBidRequest: {"bid_id": UUID, "event_id": UUID, "reason": "r"},
    r.AcceptBidRequest: {
        "bid_id": UUID,
        "event_id": UUID,
        "client_email": "a@example.com",
        "title": "t",
        "description": "d",
    },
    r.CompleteTaskRequest: {"task_id": UUID, "execution_id": UUID, "event_id": UUID, "result": "x"},
    r.FailTaskRequest: {
        "task_id": UUID,
        "execution_id": UUID,
        "event_id": UUID,
        "error_type": "PERMANENT",
        "message": "m",
    },
}

TEXT_FIELDS = [
    (r.CreateTaskRequest, "title"),
    (r.CreateTaskRequest, "description"),
    (r.PlaceBidRequest, "marketplace"),
    (r.PlaceBidRequest, "job_id"),
    (r.PlaceBidRequest, "agent_id"),
    (r.PlaceBidRequest, "proposal"),
    (r.WithdrawBidRequest, "reason"),
    (r.RejectBidRequest, "reason"),
    (r.AcceptBidRequest, "title"),
    (r.AcceptBidRequest, "description"),
    (r.CompleteTaskRequest, "result"),
    (r.FailTaskRequest, "message"),
]


def violations(model: type[Any], **changes: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgumentError) as caught:
        r.parse(model, {**BASE[model], **changes})
    return [(v.field, v.description) for v in caught.value.violations]


@pytest.mark.parametrize(("model", "field"), TEXT_FIELDS, ids=lambda x: getattr(x, "__name__", x))
def test_nul_is_refused_naming_the_field(model: type[Any], field: str) -> None:
    found = violations(model, **{field: "ab\x00cd"})
    assert [f for f, _ in found] == [field]


def test_the_bases_are_valid() -> None:
    for model, data in BASE.items():
        r.parse(model, data)


@pytest.mark.parametrize(
    ("model", "field"), [(r.CompleteTaskRequest, "result"), (r.FailTaskRequest, "message")]
)
def test_machine_text_may_hold_other_control_characters(model: type[Any], field: str) -> None:
    text = "\x1b[31mred\x1b[0m\x0cpage\x07"
    assert getattr(r.parse(model, {**BASE[model], field: text}), field) == text


def test_peoples_text_refuses_other_control_characters() -> None:
    assert [f for f, _ in violations(r.PlaceBidRequest, proposal="\x1b[31m")] == ["proposal"]


def test_result_length_bound() -> None:
    r.parse(r.CompleteTaskRequest, {**BASE[r.CompleteTaskRequest], "result": "é" * MAX_RESULT})
    found = violations(r.CompleteTaskRequest, result="x" * (MAX_RESULT + 1))
    assert [f for f, _ in found] == ["result"]


def test_message_length_bound() -> None:
    found = violations(r.FailTaskRequest, message="x" * (MAX_TEXT + 1))
    assert [f for f, _ in found] == ["message"]


@pytest.mark.parametrize("value", ["job-1\n", "job-1\r\n", "\njob-1"])
def test_identifier_with_a_newline_is_refused(value: str) -> None:
    assert [f for f, _ in violations(r.PlaceBidRequest, job_id=value)] == ["job_id"]


PEOPLES_TEXT = [
    (r.CreateTaskRequest, "title"),
    (r.CreateTaskRequest, "description"),
    (r.PlaceBidRequest, "proposal"),
    (r.WithdrawBidRequest, "reason"),
    (r.RejectBidRequest, "reason"),
    (r.AcceptBidRequest, "title"),
    (r.AcceptBidRequest, "description"),
]
BIDI_CONTROLS = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))]


@pytest.mark.parametrize(("model", "field"), PEOPLES_TEXT, ids=lambda x: getattr(x, "__name__", x))
@pytest.mark.parametrize("char", BIDI_CONTROLS, ids=lambda c: f"U+{ord(c):04X}")
def test_peoples_text_refuses_bidi_controls(model: type[Any], field: str, char: str) -> None:
    found = violations(model, **{field: f"pay {char}001$ now"})
    assert found == [(field, "must not contain bidirectional control characters")]


@pytest.mark.parametrize("char", ["\x7f", "\x85", "\x9b", "\x0b", "\x1b"], ids=ascii)
def test_peoples_text_refuses_del_and_c1_controls(char: str) -> None:
    found = violations(r.PlaceBidRequest, proposal=f"a{char}b")
    assert found == [("proposal", "must not contain control characters")]


@pytest.mark.parametrize(("model", "field"), PEOPLES_TEXT, ids=lambda x: getattr(x, "__name__", x))
def test_peoples_text_keeps_tabs_newlines_and_other_scripts(model: type[Any], field: str) -> None:
    # U+200F (RIGHT-TO-LEFT MARK) is a mark, not an embedding or override: allowed.
    text = "Line one\n\tLine two\r\n\u05e9\u05dc\u05d5\u05dd, \u0645\u0631\u062d\u0628\u0627 \u200f"
    assert getattr(r.parse(model, {**BASE[model], field: text}), field) == text


@pytest.mark.parametrize(
    ("model", "field"), [(r.CompleteTaskRequest, "result"), (r.FailTaskRequest, "message")]
)
def test_machine_text_keeps_bidi_controls(model: type[Any], field: str) -> None:
    text = "abc\u202edef\u2066ghi\u2069"
    assert getattr(r.parse(model, {**BASE[model], field: text}), field) == text
