"""Who may do what: the ownership rules of the bids service, in one place.

* agent: places, withdraws, sees only its own bids (subject == agent_id).
* client: creates and sees only its own tasks (subject == client_email), asks
  for delivery tokens for them, and decides bids: AcceptBid (for itself:
  client_email == subject) and RejectBid. Bids live on outside marketplaces and
  carry no client, so any client may see and decide any PENDING bid.
* service (the execution service): GetTask, ListTasks, StartTask,
  CompleteTask, FailTask on any task.
* admin: everything.
* GetDelivery: the task's client (and admin), holding the token: a client sees
  only its own deliveries, so a token that leaked to anyone else is refused
  like an unknown one (no oracle).

A refusal that depends only on the caller and its request (its role, the
client_email or agent_id it names) is PERMISSION_DENIED; a refusal by role
alone is the kit's ``check_role``, the same check and error as in the execution
service. A refusal that depends on who owns a stored task or bid is the
NOT_FOUND of an unknown id (same reason, message and metadata), so nothing
tells a stranger that another principal's task or bid exists, nor whose it is.
"""

from __future__ import annotations

from marketplace_common.auth import Principal, Role
from marketplace_common.auth import actor_name as actor_name
from marketplace_common.auth import check_role as check_role

from marketplace_bids.domain.errors import BidNotFoundError, NotOwnerError, TaskNotFoundError
from marketplace_bids.domain.models import Bid, Task


def _same_email(principal: Principal, email: str) -> bool:
    return principal.subject.strip().lower() == email.lower()


def require_client(principal: Principal, action: str, client_email: str) -> None:
    """Admin, or the client whose e-mail this is."""
    if principal.role is Role.ADMIN:
        return
    if principal.role is Role.CLIENT and _same_email(principal, client_email):
        return
    raise NotOwnerError(action, f"for client {client_email}")


def require_agent(principal: Principal, action: str, agent_id: str) -> None:
    """Admin, or the agent itself."""
    if principal.role is Role.ADMIN:
        return
    if principal.role is Role.AGENT and principal.subject == agent_id:
        return
    raise NotOwnerError(action, f"for agent {agent_id}")


def is_tasks_client(principal: Principal, task: Task) -> bool:
    """Admin, or the client who ordered the task."""
    if principal.role is Role.ADMIN:
        return True
    return principal.role is Role.CLIENT and _same_email(principal, task.client_email)


def check_can_see_task(principal: Principal, task: Task) -> None:
    """Admin and service see every task, a client its own; to anyone else the task
    does not exist (TASK_NOT_FOUND, as for an unknown id)."""
    if principal.role is Role.SERVICE or is_tasks_client(principal, task):
        return
    raise TaskNotFoundError(task.task_id)


def check_is_tasks_client(principal: Principal, task: Task) -> None:
    """Admin or the task's client (delivery tokens); to anyone else, TASK_NOT_FOUND."""
    if not is_tasks_client(principal, task):
        raise TaskNotFoundError(task.task_id)


def may_redeem_delivery(principal: Principal, task: Task) -> bool:
    """Admin, or the client who ordered the task (the caller also needs the token)."""
    return is_tasks_client(principal, task)


def check_can_see_bid(principal: Principal, bid: Bid) -> None:
    """Admin and clients see every bid, an agent its own; to anyone else the bid does
    not exist (BID_NOT_FOUND, as for an unknown id)."""
    if principal.role in (Role.ADMIN, Role.CLIENT):
        return
    check_is_bids_agent(principal, bid)


def check_is_bids_agent(principal: Principal, bid: Bid) -> None:
    """Admin or the bidding agent (WithdrawBid); to anyone else, BID_NOT_FOUND."""
    if principal.role is Role.ADMIN:
        return
    if principal.role is Role.AGENT and principal.subject == bid.agent_id:
        return
    raise BidNotFoundError(bid.bid_id)


def task_list_scope(principal: Principal, client_email: str | None) -> str | None:
    """The client_email filter a ListTasks call really runs with.

    A client is pinned to its own tasks (empty filter = its own); asking for
    another client's is PermissionDenied.
    """
    check_role(principal, "list tasks", Role.CLIENT, Role.SERVICE)
    if principal.role is not Role.CLIENT:
        return client_email
    own = principal.subject.strip().lower()
    if client_email is not None and client_email != own:
        raise NotOwnerError("list tasks", f"of client {client_email}")
    return own


def bid_list_scope(principal: Principal, agent_id: str | None) -> str | None:
    """The agent_id filter a ListBids call really runs with (agents see their own)."""
    check_role(principal, "list bids", Role.CLIENT, Role.AGENT)
    if principal.role is not Role.AGENT:
        return agent_id
    if agent_id is not None and agent_id != principal.subject:
        raise NotOwnerError("list bids", f"of agent {agent_id}")
    return principal.subject
