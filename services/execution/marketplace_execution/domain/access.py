"""Who may do what: the ownership rules of the execution service, in one place.

An execution belongs to its task. Its **owners** are recorded on it when it is
submitted (from BidService's GetTask answer), so no check needs a call to bids:

* the task's client (``client_email``),
* the agent whose bid was accepted for the task (``agent_id``),
* the ``service`` principal that submitted it (``submitted_by``), so a platform
  service can follow and stop the work it started.

Rules:

* SubmitExecution: the winning agent of the task, a service, or admin. A
  client may not submit, not even on its own task: clients order work, the
  agent they accepted does it (a task created without a bid is submitted by a
  service or admin). That refusal depends on the role alone, so it is
  PERMISSION_DENIED and says nothing about the task. Any other agent gets the
  same NOT_FOUND (TASK_NOT_FOUND) as for an unknown task.
* GetExecution, WatchExecution, CancelExecution: the owners and admin. Anyone
  else gets NOT_FOUND (EXECUTION_NOT_FOUND) with the message of an unknown id.
* ListExecutions: every role may call it and sees only what it owns (the filter
  runs in SQL); admin sees everything. A task_id filter on someone else's task
  is simply an empty page.
* Complete: agents, services and admin (clients are PERMISSION_DENIED), within a
  per-principal quota.
* Executions stored before owners were recorded have none: only admin sees them.
"""

from __future__ import annotations

from dataclasses import dataclass

from marketplace_common.auth import Principal, Role
from marketplace_common.auth import actor_name as actor_name
from marketplace_common.auth import check_role as check_role

from marketplace_execution.domain.errors import ExecutionNotFoundError, TaskNotFoundError
from marketplace_execution.domain.models import Execution, TaskInfo


def normalized_email(email: str) -> str:
    """Client e-mails compare case-insensitively (as in the bids service)."""
    return email.strip().lower()


def require_submitter_role(principal: Principal) -> None:
    """SubmitExecution is for agents, services and admin."""
    check_role(principal, "submit executions", Role.AGENT, Role.SERVICE)


def require_complete_role(principal: Principal) -> None:
    """Complete is for agents, services and admin."""
    check_role(principal, "call Complete", Role.AGENT, Role.SERVICE)


def check_can_submit(principal: Principal, task: TaskInfo) -> None:
    """Admin and services submit on any task, an agent only on the task it won.

    Anyone else gets the NOT_FOUND of an unknown task: a stranger learns nothing.
    """
    if principal.role in (Role.ADMIN, Role.SERVICE):
        return
    if principal.role is Role.AGENT and task.agent_id and principal.subject == task.agent_id:
        return
    raise TaskNotFoundError(task.task_id)


def is_owner(principal: Principal, execution: Execution) -> bool:
    """True for admin and for the execution's owners (see the module docstring)."""
    if principal.role is Role.ADMIN:
        return True
    if principal.role is Role.CLIENT:
        return execution.client_email is not None and execution.client_email == normalized_email(
            principal.subject
        )
    if principal.role is Role.AGENT:
        return execution.agent_id is not None and execution.agent_id == principal.subject
    return execution.submitted_by is not None and execution.submitted_by == actor_name(principal)


def check_can_see(principal: Principal, execution: Execution) -> None:
    """The owners and admin; anyone else gets exactly the NOT_FOUND of an unknown id."""
    if not is_owner(principal, execution):
        raise ExecutionNotFoundError(execution.execution_id)


@dataclass(frozen=True, slots=True)
class OwnerScope:
    """The one owner column a ListExecutions call is restricted to (None: no restriction).

    Exactly one of the fields is set: each is served by its own index.
    """

    client_email: str | None = None
    agent_id: str | None = None
    submitted_by: str | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.client_email, self.agent_id, self.submitted_by) if v is not None]
        if len(given) != 1:
            raise ValueError("an owner scope names exactly one owner")

    def key(self) -> str:
        """A stable text of the scope (bound into page tokens)."""
        return f"{self.client_email}|{self.agent_id}|{self.submitted_by}"


def list_scope(principal: Principal) -> OwnerScope | None:
    """What a ListExecutions caller may see: None (everything) for admin, else its own."""
    if principal.role is Role.ADMIN:
        return None
    if principal.role is Role.CLIENT:
        return OwnerScope(client_email=normalized_email(principal.subject))
    if principal.role is Role.AGENT:
        return OwnerScope(agent_id=principal.subject)
    return OwnerScope(submitted_by=actor_name(principal))
