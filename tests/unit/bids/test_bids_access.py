"""The ownership rules, one role at a time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from marketplace_bids.domain import access
from marketplace_bids.domain.errors import BidNotFoundError, NotOwnerError, TaskNotFoundError
from marketplace_bids.domain.models import Bid, Task
from marketplace_bids.domain.values import BidStatus, Money, TaskStatus
from marketplace_common.auth import Principal, Role

NOW = datetime.now(UTC)
MONEY = Money(currency_code="EUR", units=1, nanos=0)
TASK = Task(
    task_id="t", client_email="alice@example.com", title="t", description="", budget=MONEY,
    status=TaskStatus.PENDING, created_at=NOW, updated_at=NOW,
)  # fmt: skip
BID = Bid(
    bid_id="b", marketplace="m", job_id="j", agent_id="agent-1", amount=MONEY, proposal="",
    status=BidStatus.PENDING, created_at=NOW, updated_at=NOW,
)  # fmt: skip

ALICE = Principal(Role.CLIENT, "Alice@example.com")
BOB = Principal(Role.CLIENT, "bob@example.com")
AGENT = Principal(Role.AGENT, "agent-1")
OTHER_AGENT = Principal(Role.AGENT, "agent-2")
SERVICE = Principal(Role.SERVICE, "execution")
ADMIN = Principal(Role.ADMIN, "ops")


@pytest.mark.parametrize("who", [ALICE, SERVICE, ADMIN])
def test_task_visible_to_owner_service_and_admin(who: Principal) -> None:
    access.check_can_see_task(who, TASK)


@pytest.mark.parametrize("who", [BOB, AGENT])
def test_task_hidden_from_others(who: Principal) -> None:
    # As for an unknown id: nothing tells a stranger the task exists, nor whose it is.
    with pytest.raises(TaskNotFoundError) as raised:
        access.check_can_see_task(who, TASK)
    assert "alice" not in raised.value.message.lower()


@pytest.mark.parametrize("who", [AGENT, ALICE, ADMIN])
def test_bid_visible_to_its_agent_clients_and_admin(who: Principal) -> None:
    access.check_can_see_bid(who, BID)


@pytest.mark.parametrize("who", [OTHER_AGENT, SERVICE])
def test_bid_hidden_from_other_agents_and_service(who: Principal) -> None:
    with pytest.raises(BidNotFoundError) as raised:
        access.check_can_see_bid(who, BID)
    assert "agent-1" not in raised.value.message


def test_client_task_list_is_pinned_to_itself() -> None:
    assert access.task_list_scope(ALICE, None) == "alice@example.com"
    with pytest.raises(NotOwnerError):
        access.task_list_scope(ALICE, "bob@example.com")


def test_agent_bid_list_is_pinned_to_itself() -> None:
    assert access.bid_list_scope(AGENT, None) == "agent-1"
    with pytest.raises(NotOwnerError):
        access.bid_list_scope(AGENT, "agent-2")


def test_admin_lists_anything() -> None:
    assert access.task_list_scope(ADMIN, None) is None
    assert access.bid_list_scope(ADMIN, "agent-2") == "agent-2"


def test_actor_name_is_role_and_subject() -> None:
    assert access.actor_name(AGENT) == "agent:agent-1"
