"""Every error reason of the bids service, once, over a real channel: code, ErrorInfo, details."""

from __future__ import annotations

import base64
import json

import grpc
import pytest
from bids_support import (
    Details,
    Harness,
    accept_request,
    completed_task,
    create_task_request,
    execute,
    expect_error,
    money,
    new_id,
    place_bid_request,
    scalar,
)
from google.protobuf.duration_pb2 import Duration
from marketplace.bids.v1 import bids_pb2
from marketplace.common.v1 import common_pb2

DOMAIN = "bids.marketplace"


def assert_error(d: Details, code: grpc.StatusCode, reason: str, error_type: str) -> None:
    assert (d.code, d.info.reason, d.info.domain) == (code, reason, DOMAIN)
    assert d.info.metadata["errorType"] == error_type
    assert d.info_count == 1


async def test_invalid_request_lists_every_bad_field(bids: Harness) -> None:
    bad = bids_pb2.CreateTaskRequest(
        request_id="not-a-uuid",
        client_email="nope",
        title="",
        budget=common_pb2.Money(currency_code="XYZ", units=1, nanos=-5),
    )
    d = await expect_error(bids.as_("admin").CreateTask(bad))
    assert_error(d, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "PERMANENT")
    assert set(d.fields) == {
        "request_id",
        "client_email",
        "title",
        "budget.currency_code",
        "budget.nanos",
    }
    assert d.retry is None
    assert await scalar(bids.url, "SELECT count(*) FROM tasks") == 0


async def test_unknown_task_is_task_not_found(bids: Harness) -> None:
    d = await expect_error(bids.as_("admin").GetTask(bids_pb2.GetTaskRequest(task_id=new_id())))
    assert_error(d, grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND", "PERMANENT")


async def test_unknown_bid_is_bid_not_found(bids: Harness) -> None:
    d = await expect_error(bids.as_("admin").GetBid(bids_pb2.GetBidRequest(bid_id=new_id())))
    assert_error(d, grpc.StatusCode.NOT_FOUND, "BID_NOT_FOUND", "PERMANENT")


async def test_second_pending_bid_is_bid_already_active(bids: Harness) -> None:
    agent = bids.as_("agent")
    await agent.PlaceBid(place_bid_request(job_id="dup"))
    d = await expect_error(agent.PlaceBid(place_bid_request(job_id="dup")))
    assert_error(d, grpc.StatusCode.ALREADY_EXISTS, "BID_ALREADY_ACTIVE", "PERMANENT")


async def test_agent_may_bid_again_after_withdrawing(bids: Harness) -> None:
    agent = bids.as_("agent")
    bid = (await agent.PlaceBid(place_bid_request(job_id="again"))).bid
    await agent.WithdrawBid(bids_pb2.WithdrawBidRequest(bid_id=bid.bid_id, event_id=new_id()))
    again = (await agent.PlaceBid(place_bid_request(job_id="again"))).bid
    assert again.status == bids_pb2.BID_STATUS_PENDING


async def test_transition_of_decided_bid_is_bid_not_pending(bids: Harness) -> None:
    bid = (await bids.as_("agent").PlaceBid(place_bid_request())).bid
    await bids.as_("alice").RejectBid(
        bids_pb2.RejectBidRequest(bid_id=bid.bid_id, event_id=new_id())
    )
    d = await expect_error(bids.as_("alice").AcceptBid(accept_request(bid.bid_id)))
    assert_error(d, grpc.StatusCode.FAILED_PRECONDITION, "BID_NOT_PENDING", "PERMANENT")


async def test_event_id_reused_with_other_request_is_idempotency_key_reused(
    bids: Harness,
) -> None:
    agent = bids.as_("agent")
    bid = (await agent.PlaceBid(place_bid_request())).bid
    event_id = new_id()
    first = bids_pb2.WithdrawBidRequest(bid_id=bid.bid_id, event_id=event_id, reason="a")
    await agent.WithdrawBid(first)
    again = await agent.WithdrawBid(first)
    assert again.event.event_id == event_id
    other = bids_pb2.WithdrawBidRequest(bid_id=bid.bid_id, event_id=event_id, reason="b")
    d = await expect_error(agent.WithdrawBid(other))
    assert_error(d, grpc.StatusCode.INVALID_ARGUMENT, "IDEMPOTENCY_KEY_REUSED", "PERMANENT")
    assert d.fields == ["event_id"]


async def test_request_id_reused_with_other_request_is_idempotency_key_reused(
    bids: Harness,
) -> None:
    alice = bids.as_("alice")
    request = create_task_request()
    first = (await alice.CreateTask(request)).task
    assert (await alice.CreateTask(request)).task == first
    request.budget.CopyFrom(money(999))
    d = await expect_error(alice.CreateTask(request))
    assert_error(d, grpc.StatusCode.INVALID_ARGUMENT, "IDEMPOTENCY_KEY_REUSED", "PERMANENT")
    assert d.fields == ["request_id"]


async def test_page_token_with_other_filters_is_invalid_page_token(bids: Harness) -> None:
    alice = bids.as_("alice")
    for _ in range(3):
        await alice.CreateTask(create_task_request())
    page = await alice.ListTasks(bids_pb2.ListTasksRequest(page_size=1))
    d = await expect_error(
        alice.ListTasks(
            bids_pb2.ListTasksRequest(
                page_size=1,
                page_token=page.next_page_token,
                status=bids_pb2.TASK_STATUS_COMPLETED,
            )
        )
    )
    assert_error(d, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN", "PERMANENT")
    assert d.fields == ["page_token"]


@pytest.mark.parametrize(
    "time", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"], ids=["low", "high"]
)
async def test_forged_page_token_overflowing_utc_is_invalid_page_token(
    bids: Harness, time: str
) -> None:
    alice = bids.as_("alice")
    for _ in range(2):
        await alice.CreateTask(create_task_request())
    page = await alice.ListTasks(bids_pb2.ListTasksRequest(page_size=1))
    body = json.loads(base64.urlsafe_b64decode(page.next_page_token + "=="))
    body["t"] = time
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    d = await expect_error(
        alice.ListTasks(bids_pb2.ListTasksRequest(page_size=1, page_token=forged))
    )
    assert_error(d, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN", "PERMANENT")
    assert d.fields == ["page_token"]


async def test_start_of_started_task_is_task_not_pending(bids: Harness) -> None:
    task, _ = await completed_task(bids)
    d = await expect_error(
        bids.as_("service").StartTask(
            bids_pb2.StartTaskRequest(
                task_id=task.task_id, execution_id=new_id(), event_id=new_id()
            )
        )
    )
    assert_error(d, grpc.StatusCode.FAILED_PRECONDITION, "TASK_NOT_PENDING", "PERMANENT")


async def test_complete_of_pending_task_is_task_not_processing(bids: Harness) -> None:
    task = (await bids.as_("alice").CreateTask(create_task_request())).task
    d = await expect_error(
        bids.as_("service").CompleteTask(
            bids_pb2.CompleteTaskRequest(
                task_id=task.task_id, execution_id=new_id(), event_id=new_id()
            )
        )
    )
    assert_error(d, grpc.StatusCode.FAILED_PRECONDITION, "TASK_NOT_PROCESSING", "PERMANENT")


async def test_fail_of_completed_task_is_task_not_processing(bids: Harness) -> None:
    task, execution_id = await completed_task(bids)
    d = await expect_error(
        bids.as_("service").FailTask(
            bids_pb2.FailTaskRequest(
                task_id=task.task_id,
                execution_id=execution_id,
                event_id=new_id(),
                error_type=common_pb2.ERROR_TYPE_PERMANENT,
                message="too late",
            )
        )
    )
    assert_error(d, grpc.StatusCode.FAILED_PRECONDITION, "TASK_NOT_PROCESSING", "PERMANENT")


async def test_complete_by_another_execution_is_execution_mismatch(bids: Harness) -> None:
    task = (await bids.as_("alice").CreateTask(create_task_request())).task
    service = bids.as_("service")
    await service.StartTask(
        bids_pb2.StartTaskRequest(task_id=task.task_id, execution_id=new_id(), event_id=new_id())
    )
    d = await expect_error(
        service.CompleteTask(
            bids_pb2.CompleteTaskRequest(
                task_id=task.task_id, execution_id=new_id(), event_id=new_id()
            )
        )
    )
    assert_error(d, grpc.StatusCode.FAILED_PRECONDITION, "EXECUTION_MISMATCH", "PERMANENT")


async def test_token_for_unfinished_task_is_task_not_completed(bids: Harness) -> None:
    task = (await bids.as_("alice").CreateTask(create_task_request())).task
    d = await expect_error(
        bids.as_("alice").CreateDeliveryToken(
            bids_pb2.CreateDeliveryTokenRequest(task_id=task.task_id)
        )
    )
    assert_error(d, grpc.StatusCode.FAILED_PRECONDITION, "TASK_NOT_COMPLETED", "PERMANENT")


async def test_unknown_token_is_delivery_not_found(bids: Harness) -> None:
    d = await expect_error(bids.as_("bob").GetDelivery(bids_pb2.GetDeliveryRequest(token="x" * 43)))
    assert_error(d, grpc.StatusCode.NOT_FOUND, "DELIVERY_NOT_FOUND", "PERMANENT")


async def test_expired_token_is_delivery_not_found_like_an_unknown_one(bids: Harness) -> None:
    task, _ = await completed_task(bids)
    issued = await bids.as_("alice").CreateDeliveryToken(
        bids_pb2.CreateDeliveryTokenRequest(task_id=task.task_id, ttl=Duration(seconds=60))
    )
    await execute(
        bids.url,
        "UPDATE delivery_tokens SET expires_at = created_at WHERE task_id = :t",
        t=task.task_id,
    )
    expired = await expect_error(
        bids.as_("alice").GetDelivery(bids_pb2.GetDeliveryRequest(token=issued.token))
    )
    unknown = await expect_error(
        bids.as_("alice").GetDelivery(bids_pb2.GetDeliveryRequest(token=issued.token + "x"))
    )
    assert_error(expired, grpc.StatusCode.NOT_FOUND, "DELIVERY_NOT_FOUND", "PERMANENT")
    assert (expired.message, expired.info.metadata) == (unknown.message, unknown.info.metadata)


async def test_other_clients_task_is_not_found(bids: Harness) -> None:
    task = (await bids.as_("alice").CreateTask(create_task_request())).task
    d = await expect_error(bids.as_("bob").GetTask(bids_pb2.GetTaskRequest(task_id=task.task_id)))
    assert_error(d, grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND", "PERMANENT")


async def test_missing_token_is_unauthenticated(bids: Harness) -> None:
    from marketplace.bids.v1 import bids_pb2_grpc

    stub = bids_pb2_grpc.BidServiceStub(bids.channel)
    d = await expect_error(stub.GetTask(bids_pb2.GetTaskRequest(task_id=new_id()), timeout=10))
    assert_error(d, grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", "PERMANENT")


@pytest.mark.postgres
async def test_row_lock_wait_past_the_timeout_is_aborted_with_retry_info(pg_url: str) -> None:
    import asyncpg  # type: ignore[import-untyped]
    from bids_support import close_harness, migrate, open_harness

    await migrate(pg_url)
    h = await open_harness(pg_url, lock_timeout_ms=200)
    try:
        bid = (await h.as_("agent").PlaceBid(place_bid_request())).bid
        dsn = pg_url.replace("postgresql+asyncpg", "postgresql")
        holder = await asyncpg.connect(dsn)
        try:
            tx = holder.transaction()
            await tx.start()
            await holder.execute("SELECT 1 FROM bids WHERE bid_id = $1 FOR UPDATE", bid.bid_id)
            d = await expect_error(
                h.as_("agent").WithdrawBid(
                    bids_pb2.WithdrawBidRequest(bid_id=bid.bid_id, event_id=new_id())
                )
            )
            await tx.rollback()
        finally:
            await holder.close()
    finally:
        await close_harness(h)
    assert_error(d, grpc.StatusCode.ABORTED, "LOCK_TIMEOUT", "TRANSIENT")
    assert d.retry is not None
    assert d.retry.retry_delay.ToTimedelta().total_seconds() > 0
