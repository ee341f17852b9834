"""The execution service's ownership rules (domain/access.py), one role at a time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from marketplace_common.auth import Principal, Role
from marketplace_common.errors import PermissionDeniedError
from marketplace_execution.domain import access
from marketplace_execution.domain.errors import ExecutionNotFoundError, TaskNotFoundError
from marketplace_execution.domain.models import Execution, ExecutionStatus, TaskInfo

NOW = datetime.now(UTC)
TASK = TaskInfo(
    task_id=uuid.uuid4(), status="PENDING", title="t", description="d",
    client_email="alice@example.com", agent_id="agent-1",
)  # fmt: skip
DIRECT_TASK = TaskInfo(
    task_id=uuid.uuid4(), status="PENDING", title="t", description="d",
    client_email="alice@example.com",
)  # fmt: skip
EXECUTION = Execution(
    execution_id=uuid.uuid4(), task_id=TASK.task_id, request_id=uuid.uuid4(),
    status=ExecutionStatus.QUEUED, prompt="p", model="m", output_schema=None, max_attempts=3,
    created_at=NOW, updated_at=NOW, client_email="alice@example.com", agent_id="agent-1",
    submitted_by="service:platform",
)  # fmt: skip
LEGACY = Execution(
    execution_id=uuid.uuid4(), task_id=TASK.task_id, request_id=uuid.uuid4(),
    status=ExecutionStatus.QUEUED, prompt="p", model="m", output_schema=None, max_attempts=3,
    created_at=NOW, updated_at=NOW,
)  # fmt: skip

ALICE = Principal(Role.CLIENT, " Alice@Example.com ")
BOB = Principal(Role.CLIENT, "bob@example.com")
AGENT = Principal(Role.AGENT, "agent-1")
OTHER_AGENT = Principal(Role.AGENT, "agent-2")
PLATFORM = Principal(Role.SERVICE, "platform")
OTHER_SERVICE = Principal(Role.SERVICE, "execution")
ADMIN = Principal(Role.ADMIN, "ops")


@pytest.mark.parametrize("who", [AGENT, PLATFORM, ADMIN])
def test_the_winning_agent_services_and_admin_submit(who: Principal) -> None:
    access.require_submitter_role(who)
    access.check_can_submit(who, TASK)


@pytest.mark.parametrize("who", [ALICE, BOB])
def test_clients_never_submit(who: Principal) -> None:
    with pytest.raises(PermissionDeniedError):
        access.require_submitter_role(who)


@pytest.mark.parametrize("task", [TASK, DIRECT_TASK])
def test_another_agent_is_told_the_task_does_not_exist(task: TaskInfo) -> None:
    with pytest.raises(TaskNotFoundError) as raised:
        access.check_can_submit(OTHER_AGENT, task)
    assert raised.value.message == f"task {task.task_id} not found"


@pytest.mark.parametrize("who", [ALICE, AGENT, PLATFORM, ADMIN])
def test_owners_and_admin_see_the_execution(who: Principal) -> None:
    access.check_can_see(who, EXECUTION)


@pytest.mark.parametrize("who", [BOB, OTHER_AGENT, OTHER_SERVICE])
def test_anyone_else_is_told_the_execution_does_not_exist(who: Principal) -> None:
    with pytest.raises(ExecutionNotFoundError) as raised:
        access.check_can_see(who, EXECUTION)
    assert raised.value.message == f"execution {EXECUTION.execution_id} not found"


@pytest.mark.parametrize("who", [ALICE, AGENT, PLATFORM, BOB])
def test_an_execution_without_recorded_owners_is_admins_only(who: Principal) -> None:
    with pytest.raises(ExecutionNotFoundError):
        access.check_can_see(who, LEGACY)
    access.check_can_see(ADMIN, LEGACY)


def test_list_scopes_pin_each_role_to_one_owner_column() -> None:
    assert access.list_scope(ADMIN) is None
    assert access.list_scope(ALICE) == access.OwnerScope(client_email="alice@example.com")
    assert access.list_scope(AGENT) == access.OwnerScope(agent_id="agent-1")
    assert access.list_scope(PLATFORM) == access.OwnerScope(submitted_by="service:platform")
    with pytest.raises(ValueError, match="exactly one"):
        access.OwnerScope()


@pytest.mark.parametrize("who", [ALICE, BOB])
def test_complete_is_not_for_clients(who: Principal) -> None:
    with pytest.raises(PermissionDeniedError):
        access.require_complete_role(who)
    for allowed in (AGENT, PLATFORM, ADMIN):
        access.require_complete_role(allowed)
