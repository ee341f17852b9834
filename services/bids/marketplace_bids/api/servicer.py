"""The gRPC face of the bids service: validate, call the domain, convert back.

Servicers raise domain errors; the kit's error-mapping interceptor turns
them into a status with ErrorInfo (domain ``bids.marketplace``), RetryInfo
and BadRequest.
"""

from __future__ import annotations

from typing import Any

import grpc.aio
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from marketplace_common.auth import current_principal

from marketplace_bids.api import convert
from marketplace_bids.domain import delivery as d
from marketplace_bids.domain import requests as r
from marketplace_bids.domain.bid_service import BidService
from marketplace_bids.domain.delivery_service import DeliveryService
from marketplace_bids.domain.task_service import TaskService

Context = grpc.aio.ServicerContext[Any, Any]
BID_SERVICE_NAME: str = bids_pb2.DESCRIPTOR.services_by_name["BidService"].full_name
ERROR_DOMAIN = "bids.marketplace"


class BidServicer(bids_pb2_grpc.BidServiceServicer):
    """marketplace.bids.v1.BidService over the domain services."""

    def __init__(self, tasks: TaskService, bids: BidService, deliveries: DeliveryService) -> None:
        self._tasks = tasks
        self._bids = bids
        self._deliveries = deliveries

    async def CreateTask(
        self, request: bids_pb2.CreateTaskRequest, context: Context
    ) -> bids_pb2.CreateTaskResponse:
        req = r.parse(r.CreateTaskRequest, convert.request_fields(request))
        task = await self._tasks.create_task(current_principal(), req)
        return bids_pb2.CreateTaskResponse(task=convert.task(task))

    async def GetTask(
        self, request: bids_pb2.GetTaskRequest, context: Context
    ) -> bids_pb2.GetTaskResponse:
        req = r.parse(r.GetTaskRequest, convert.request_fields(request))
        task = await self._tasks.get_task(current_principal(), req)
        return bids_pb2.GetTaskResponse(task=convert.task(task))

    async def ListTasks(
        self, request: bids_pb2.ListTasksRequest, context: Context
    ) -> bids_pb2.ListTasksResponse:
        req = r.parse(r.ListTasksRequest, convert.request_fields(request))
        page = await self._tasks.list_tasks(current_principal(), req)
        return bids_pb2.ListTasksResponse(
            tasks=[convert.task(t) for t in page.items], next_page_token=page.next_page_token
        )

    async def PlaceBid(
        self, request: bids_pb2.PlaceBidRequest, context: Context
    ) -> bids_pb2.PlaceBidResponse:
        req = r.parse(r.PlaceBidRequest, convert.request_fields(request))
        bid = await self._bids.place_bid(current_principal(), req)
        return bids_pb2.PlaceBidResponse(bid=convert.bid(bid))

    async def GetBid(
        self, request: bids_pb2.GetBidRequest, context: Context
    ) -> bids_pb2.GetBidResponse:
        req = r.parse(r.GetBidRequest, convert.request_fields(request))
        bid = await self._bids.get_bid(current_principal(), req)
        return bids_pb2.GetBidResponse(bid=convert.bid(bid))

    async def ListBids(
        self, request: bids_pb2.ListBidsRequest, context: Context
    ) -> bids_pb2.ListBidsResponse:
        req = r.parse(r.ListBidsRequest, convert.request_fields(request))
        page = await self._bids.list_bids(current_principal(), req)
        return bids_pb2.ListBidsResponse(
            bids=[convert.bid(b) for b in page.items], next_page_token=page.next_page_token
        )

    async def WithdrawBid(
        self, request: bids_pb2.WithdrawBidRequest, context: Context
    ) -> bids_pb2.WithdrawBidResponse:
        req = r.parse(r.WithdrawBidRequest, convert.request_fields(request))
        result = await self._bids.withdraw_bid(current_principal(), req)
        return bids_pb2.WithdrawBidResponse(
            bid=convert.bid(result.bid), event=convert.bid_event(result.event)
        )

    async def AcceptBid(
        self, request: bids_pb2.AcceptBidRequest, context: Context
    ) -> bids_pb2.AcceptBidResponse:
        req = r.parse(r.AcceptBidRequest, convert.request_fields(request))
        result = await self._bids.accept_bid(current_principal(), req)
        if result.task is None:  # pragma: no cover - AcceptBid always creates one
            raise AssertionError("AcceptBid produced no task")
        return bids_pb2.AcceptBidResponse(
            bid=convert.bid(result.bid),
            task=convert.task(result.task),
            event=convert.bid_event(result.event),
        )

    async def RejectBid(
        self, request: bids_pb2.RejectBidRequest, context: Context
    ) -> bids_pb2.RejectBidResponse:
        req = r.parse(r.RejectBidRequest, convert.request_fields(request))
        result = await self._bids.reject_bid(current_principal(), req)
        return bids_pb2.RejectBidResponse(
            bid=convert.bid(result.bid), event=convert.bid_event(result.event)
        )

    async def ListBidEvents(
        self, request: bids_pb2.ListBidEventsRequest, context: Context
    ) -> bids_pb2.ListBidEventsResponse:
        req = r.parse(r.ListBidEventsRequest, convert.request_fields(request))
        page = await self._bids.list_bid_events(current_principal(), req)
        return bids_pb2.ListBidEventsResponse(
            events=[convert.bid_event(e) for e in page.items],
            next_page_token=page.next_page_token,
        )

    async def ListTaskEvents(
        self, request: bids_pb2.ListTaskEventsRequest, context: Context
    ) -> bids_pb2.ListTaskEventsResponse:
        req = r.parse(r.ListTaskEventsRequest, convert.request_fields(request))
        page = await self._tasks.list_task_events(current_principal(), req)
        return bids_pb2.ListTaskEventsResponse(
            events=[convert.task_event(e) for e in page.items],
            next_page_token=page.next_page_token,
        )

    async def StartTask(
        self, request: bids_pb2.StartTaskRequest, context: Context
    ) -> bids_pb2.StartTaskResponse:
        req = r.parse(r.StartTaskRequest, convert.request_fields(request))
        task = await self._tasks.start_task(current_principal(), req)
        return bids_pb2.StartTaskResponse(task=convert.task(task))

    async def CompleteTask(
        self, request: bids_pb2.CompleteTaskRequest, context: Context
    ) -> bids_pb2.CompleteTaskResponse:
        req = r.parse(r.CompleteTaskRequest, convert.request_fields(request))
        task = await self._tasks.complete_task(current_principal(), req)
        return bids_pb2.CompleteTaskResponse(task=convert.task(task))

    async def FailTask(
        self, request: bids_pb2.FailTaskRequest, context: Context
    ) -> bids_pb2.FailTaskResponse:
        req = r.parse(r.FailTaskRequest, convert.request_fields(request))
        task = await self._tasks.fail_task(current_principal(), req)
        return bids_pb2.FailTaskResponse(task=convert.task(task))

    async def CreateDeliveryToken(
        self, request: bids_pb2.CreateDeliveryTokenRequest, context: Context
    ) -> bids_pb2.CreateDeliveryTokenResponse:
        req = r.parse(d.DeliveryTokenRequest, convert.request_fields(request))
        issued = await self._deliveries.create_token(current_principal(), req)
        return convert.issued_token(issued)

    async def GetDelivery(
        self, request: bids_pb2.GetDeliveryRequest, context: Context
    ) -> bids_pb2.GetDeliveryResponse:
        req = r.parse(d.GetDeliveryRequest, convert.request_fields(request))
        delivery = await self._deliveries.get_delivery(current_principal(), req)
        return bids_pb2.GetDeliveryResponse(delivery=convert.delivery(delivery))

    async def RevokeDeliveryToken(
        self, request: bids_pb2.RevokeDeliveryTokenRequest, context: Context
    ) -> bids_pb2.RevokeDeliveryTokenResponse:
        req = r.parse(d.GetDeliveryRequest, convert.request_fields(request))
        task_id = await self._deliveries.revoke_token(current_principal(), req)
        return bids_pb2.RevokeDeliveryTokenResponse(task_id=task_id)
