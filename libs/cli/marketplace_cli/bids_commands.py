"""marketctl tasks, bids and deliveries: the BidService's RPCs."""

from __future__ import annotations

from typing import Annotated, Any, cast

import typer
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc

from marketplace_cli import values as v
from marketplace_cli.app import call, ensure_id, parsed, state
from marketplace_cli.output import note, print_json, record, rows, show

tasks = typer.Typer(help="Tasks: work a client orders.", no_args_is_help=True)
bids = typer.Typer(help="Bids: agents' offers on outside jobs.", no_args_is_help=True)
deliveries = typer.Typer(help="Delivery tokens and deliveries.", no_args_is_help=True)

PageSize = Annotated[int, typer.Option(help="Items per page (0: the server's default).")]
PageToken = Annotated[str, typer.Option(help="The next_page_token of a previous page.")]
EventId = Annotated[
    str | None, typer.Option(help="Idempotency key of the transition (generated if not given).")
]
RequestId = Annotated[
    str | None, typer.Option(help="Idempotency key of the creation (generated if not given).")
]


def _stub(ctx: typer.Context) -> bids_pb2_grpc.BidServiceStub:
    cli = state(ctx)
    return bids_pb2_grpc.BidServiceStub(cli.conn.channel(cli.conn.bids))


def _task_status(value: int) -> str:
    return v.enum_text(bids_pb2.TaskStatus, "TASK_STATUS_", value)


def _bid_status(value: int) -> str:
    return v.enum_text(bids_pb2.BidStatus, "BID_STATUS_", value)


def _emit(ctx: typer.Context, response: Any, human: Any) -> None:
    if state(ctx).json:
        print_json(response)
    else:
        human()


def _next_page(token: str) -> None:
    if token:
        note(f"next page: --page-token {token}")


def _show_task(task: bids_pb2.Task) -> None:
    record(
        "task",
        [
            ("task_id", task.task_id),
            ("status", _task_status(task.status)),
            ("client_email", task.client_email),
            ("title", task.title),
            ("description", task.description),
            ("budget", v.money_text(task.budget)),
            ("bid_id", task.bid_id),
            ("agent_id", task.agent_id),
            ("execution_id", task.execution_id),
            ("result", task.result),
            ("created_at", v.when(task.created_at)),
            ("updated_at", v.when(task.updated_at)),
        ],
    )


def _show_bid(bid: bids_pb2.Bid) -> None:
    record(
        "bid",
        [
            ("bid_id", bid.bid_id),
            ("status", _bid_status(bid.status)),
            ("marketplace", bid.marketplace),
            ("job_id", bid.job_id),
            ("agent_id", bid.agent_id),
            ("amount", v.money_text(bid.amount)),
            ("proposal", bid.proposal),
            ("created_at", v.when(bid.created_at)),
            ("updated_at", v.when(bid.updated_at)),
        ],
    )


def _show_bid_event(event: bids_pb2.BidEvent) -> None:
    change = f"{_bid_status(event.previous_status)} -> {_bid_status(event.new_status)}"
    note(f"event {event.event_id}: {change} by {event.actor}")


def _show_transition(
    bid: bids_pb2.Bid, event: bids_pb2.BidEvent, task: bids_pb2.Task | None = None
) -> None:
    _show_bid(bid)
    if task is not None:
        _show_task(task)
    _show_bid_event(event)


# --- tasks -------------------------------------------------------------------------


@tasks.command("create")
def task_create(
    ctx: typer.Context,
    client_email: Annotated[str, typer.Option(help="The ordering client's e-mail.")],
    title: Annotated[str, typer.Option(help="Short title.")],
    budget: Annotated[str, typer.Option(help="What the client pays, e.g. 12.50.")],
    currency: Annotated[str, typer.Option(help="ISO 4217 code, e.g. USD.")],
    description: Annotated[str, typer.Option(help="The work in full.")] = "",
    request_id: RequestId = None,
) -> None:
    """Create a task directly (without a bid)."""
    money = parsed(lambda: v.money(budget, currency))
    request = bids_pb2.CreateTaskRequest(
        request_id=ensure_id(request_id, "request_id"),
        client_email=client_email,
        title=title,
        description=description,
        budget=money,
    )
    response = call(ctx, _stub(ctx).CreateTask, request)
    _emit(ctx, response, lambda: _show_task(response.task))


@tasks.command("get")
def task_get(ctx: typer.Context, task_id: str) -> None:
    """Show one task."""
    response = call(ctx, _stub(ctx).GetTask, bids_pb2.GetTaskRequest(task_id=task_id))
    _emit(ctx, response, lambda: _show_task(response.task))


@tasks.command("list")
def task_list(
    ctx: typer.Context,
    client_email: Annotated[str, typer.Option(help="Only this client's tasks.")] = "",
    status: Annotated[str | None, typer.Option(help="pending, processing, ...")] = None,
    created_after: Annotated[str | None, typer.Option(help="ISO 8601 instant.")] = None,
    created_before: Annotated[str | None, typer.Option(help="ISO 8601 instant.")] = None,
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> None:
    """List tasks, newest first."""
    request = bids_pb2.ListTasksRequest(
        client_email=client_email, page_size=page_size, page_token=page_token
    )
    if status is not None:
        code = parsed(lambda: v.enum_value(bids_pb2.TaskStatus, "TASK_STATUS_", status))
        request.status = cast("bids_pb2.TaskStatus", code)
    if created_after is not None:
        request.created_after.CopyFrom(parsed(lambda: v.timestamp(created_after)))
    if created_before is not None:
        request.created_before.CopyFrom(parsed(lambda: v.timestamp(created_before)))
    response = call(ctx, _stub(ctx).ListTasks, request)

    def human() -> None:
        show(
            rows(
                "tasks",
                ("task_id", "status", "client", "title", "budget", "created_at"),
                (
                    (
                        t.task_id,
                        _task_status(t.status),
                        t.client_email,
                        t.title,
                        v.money_text(t.budget),
                        v.when(t.created_at),
                    )
                    for t in response.tasks
                ),
            )
        )
        _next_page(response.next_page_token)

    _emit(ctx, response, human)


@tasks.command("events")
def task_events(
    ctx: typer.Context, task_id: str, page_size: PageSize = 0, page_token: PageToken = ""
) -> None:
    """A task's audit trail, oldest first."""
    request = bids_pb2.ListTaskEventsRequest(
        task_id=task_id, page_size=page_size, page_token=page_token
    )
    response = call(ctx, _stub(ctx).ListTaskEvents, request)

    def human() -> None:
        show(
            rows(
                f"events of task {task_id}",
                ("created_at", "from", "to", "execution_id", "actor", "event_id"),
                (
                    (
                        v.when(e.created_at),
                        _task_status(e.previous_status),
                        _task_status(e.new_status),
                        e.execution_id,
                        e.actor,
                        e.event_id,
                    )
                    for e in response.events
                ),
            )
        )
        _next_page(response.next_page_token)

    _emit(ctx, response, human)


# --- bids --------------------------------------------------------------------------


@bids.command("place")
def bid_place(
    ctx: typer.Context,
    marketplace: Annotated[str, typer.Option(help="Where the job is posted, e.g. upwork.")],
    job_id: Annotated[str, typer.Option(help="The job's id on that marketplace.")],
    agent_id: Annotated[str, typer.Option(help="The bidding agent.")],
    amount: Annotated[str, typer.Option(help="The offered price, e.g. 12.50.")],
    currency: Annotated[str, typer.Option(help="ISO 4217 code, e.g. USD.")],
    proposal: Annotated[str, typer.Option(help="The proposal text.")] = "",
    request_id: RequestId = None,
) -> None:
    """Place a bid."""
    money = parsed(lambda: v.money(amount, currency))
    request = bids_pb2.PlaceBidRequest(
        request_id=ensure_id(request_id, "request_id"),
        marketplace=marketplace,
        job_id=job_id,
        agent_id=agent_id,
        amount=money,
        proposal=proposal,
    )
    response = call(ctx, _stub(ctx).PlaceBid, request)
    _emit(ctx, response, lambda: _show_bid(response.bid))


@bids.command("get")
def bid_get(ctx: typer.Context, bid_id: str) -> None:
    """Show one bid."""
    response = call(ctx, _stub(ctx).GetBid, bids_pb2.GetBidRequest(bid_id=bid_id))
    _emit(ctx, response, lambda: _show_bid(response.bid))


@bids.command("list")
def bid_list(
    ctx: typer.Context,
    marketplace: Annotated[str, typer.Option(help="Only bids on this marketplace.")] = "",
    job_id: Annotated[str, typer.Option(help="Only bids on this job.")] = "",
    agent_id: Annotated[str, typer.Option(help="Only this agent's bids.")] = "",
    status: Annotated[str | None, typer.Option(help="pending, accepted, ...")] = None,
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> None:
    """List bids, newest first."""
    request = bids_pb2.ListBidsRequest(
        marketplace=marketplace,
        job_id=job_id,
        agent_id=agent_id,
        page_size=page_size,
        page_token=page_token,
    )
    if status is not None:
        code = parsed(lambda: v.enum_value(bids_pb2.BidStatus, "BID_STATUS_", status))
        request.status = cast("bids_pb2.BidStatus", code)
    response = call(ctx, _stub(ctx).ListBids, request)

    def human() -> None:
        show(
            rows(
                "bids",
                ("bid_id", "status", "marketplace", "job_id", "agent_id", "amount"),
                (
                    (
                        b.bid_id,
                        _bid_status(b.status),
                        b.marketplace,
                        b.job_id,
                        b.agent_id,
                        v.money_text(b.amount),
                    )
                    for b in response.bids
                ),
            )
        )
        _next_page(response.next_page_token)

    _emit(ctx, response, human)


@bids.command("withdraw")
def bid_withdraw(
    ctx: typer.Context,
    bid_id: str,
    reason: Annotated[str, typer.Option(help="Why.")] = "",
    event_id: EventId = None,
) -> None:
    """PENDING -> WITHDRAWN, by the bidding agent."""
    request = bids_pb2.WithdrawBidRequest(
        bid_id=bid_id, event_id=ensure_id(event_id, "event_id"), reason=reason
    )
    response = call(ctx, _stub(ctx).WithdrawBid, request)
    _emit(ctx, response, lambda: _show_transition(response.bid, response.event))


@bids.command("accept")
def bid_accept(
    ctx: typer.Context,
    bid_id: str,
    client_email: Annotated[str, typer.Option(help="The client ordering the work.")],
    title: Annotated[str, typer.Option(help="Title of the task to create.")],
    description: Annotated[str, typer.Option(help="Description of the task.")] = "",
    event_id: EventId = None,
) -> None:
    """PENDING -> ACCEPTED, creating the task."""
    request = bids_pb2.AcceptBidRequest(
        bid_id=bid_id,
        event_id=ensure_id(event_id, "event_id"),
        client_email=client_email,
        title=title,
        description=description,
    )
    response = call(ctx, _stub(ctx).AcceptBid, request)
    _emit(ctx, response, lambda: _show_transition(response.bid, response.event, response.task))


@bids.command("reject")
def bid_reject(
    ctx: typer.Context,
    bid_id: str,
    reason: Annotated[str, typer.Option(help="Why.")] = "",
    event_id: EventId = None,
) -> None:
    """PENDING -> REJECTED."""
    request = bids_pb2.RejectBidRequest(
        bid_id=bid_id, event_id=ensure_id(event_id, "event_id"), reason=reason
    )
    response = call(ctx, _stub(ctx).RejectBid, request)
    _emit(ctx, response, lambda: _show_transition(response.bid, response.event))


@bids.command("events")
def bid_events(
    ctx: typer.Context, bid_id: str, page_size: PageSize = 0, page_token: PageToken = ""
) -> None:
    """A bid's audit trail, oldest first."""
    request = bids_pb2.ListBidEventsRequest(
        bid_id=bid_id, page_size=page_size, page_token=page_token
    )
    response = call(ctx, _stub(ctx).ListBidEvents, request)

    def human() -> None:
        show(
            rows(
                f"events of bid {bid_id}",
                ("created_at", "from", "to", "reason", "actor", "event_id"),
                (
                    (
                        v.when(e.created_at),
                        _bid_status(e.previous_status),
                        _bid_status(e.new_status),
                        e.reason,
                        e.actor,
                        e.event_id,
                    )
                    for e in response.events
                ),
            )
        )
        _next_page(response.next_page_token)

    _emit(ctx, response, human)


# --- deliveries --------------------------------------------------------------------


@deliveries.command("token")
def delivery_token(
    ctx: typer.Context,
    task_id: str,
    ttl: Annotated[
        str | None, typer.Option(help="How long it works: 90s, 15m, 24h, 7d (default 24h).")
    ] = None,
) -> None:
    """Issue a delivery token for a COMPLETED task (shown once)."""
    request = bids_pb2.CreateDeliveryTokenRequest(task_id=task_id)
    if ttl is not None:
        request.ttl.CopyFrom(parsed(lambda: v.duration(ttl)))
    response = call(ctx, _stub(ctx).CreateDeliveryToken, request)
    _emit(
        ctx,
        response,
        lambda: record(
            "delivery token",
            [("token", response.token), ("expires_at", v.when(response.expires_at))],
        ),
    )


@deliveries.command("get")
def delivery_get(ctx: typer.Context, token: str) -> None:
    """Redeem a delivery token: the task's result."""
    response = call(ctx, _stub(ctx).GetDelivery, bids_pb2.GetDeliveryRequest(token=token))
    d = response.delivery
    _emit(
        ctx,
        response,
        lambda: record(
            "delivery",
            [
                ("task_id", d.task_id),
                ("client_email", d.client_email),
                ("amount", v.money_text(d.amount)),
                ("delivered_at", v.when(d.delivered_at)),
                ("result", d.result),
            ],
        ),
    )


@deliveries.command("revoke")
def delivery_revoke(ctx: typer.Context, token: str) -> None:
    """Revoke a delivery token (the task's client): it stops working at once."""
    request = bids_pb2.RevokeDeliveryTokenRequest(token=token)
    response = call(ctx, _stub(ctx).RevokeDeliveryToken, request)
    _emit(ctx, response, lambda: record("revoked", [("task_id", response.task_id)]))
