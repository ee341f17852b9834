import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from marketplace.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATUS_UNSPECIFIED: _ClassVar[TaskStatus]
    TASK_STATUS_PENDING: _ClassVar[TaskStatus]
    TASK_STATUS_PROCESSING: _ClassVar[TaskStatus]
    TASK_STATUS_COMPLETED: _ClassVar[TaskStatus]
    TASK_STATUS_FAILED: _ClassVar[TaskStatus]

class BidStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BID_STATUS_UNSPECIFIED: _ClassVar[BidStatus]
    BID_STATUS_PENDING: _ClassVar[BidStatus]
    BID_STATUS_WITHDRAWN: _ClassVar[BidStatus]
    BID_STATUS_ACCEPTED: _ClassVar[BidStatus]
    BID_STATUS_REJECTED: _ClassVar[BidStatus]
TASK_STATUS_UNSPECIFIED: TaskStatus
TASK_STATUS_PENDING: TaskStatus
TASK_STATUS_PROCESSING: TaskStatus
TASK_STATUS_COMPLETED: TaskStatus
TASK_STATUS_FAILED: TaskStatus
BID_STATUS_UNSPECIFIED: BidStatus
BID_STATUS_PENDING: BidStatus
BID_STATUS_WITHDRAWN: BidStatus
BID_STATUS_ACCEPTED: BidStatus
BID_STATUS_REJECTED: BidStatus

class Task(_message.Message):
    __slots__ = ("task_id", "client_email", "title", "description", "budget", "status", "bid_id", "execution_id", "result", "created_at", "updated_at", "error_type", "agent_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_EMAIL_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BID_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    client_email: str
    title: str
    description: str
    budget: _common_pb2.Money
    status: TaskStatus
    bid_id: str
    execution_id: str
    result: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    error_type: _common_pb2.ErrorType
    agent_id: str
    def __init__(self, task_id: _Optional[str] = ..., client_email: _Optional[str] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., budget: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., bid_id: _Optional[str] = ..., execution_id: _Optional[str] = ..., result: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error_type: _Optional[_Union[_common_pb2.ErrorType, str]] = ..., agent_id: _Optional[str] = ...) -> None: ...

class Bid(_message.Message):
    __slots__ = ("bid_id", "marketplace", "job_id", "agent_id", "amount", "proposal", "status", "created_at", "updated_at")
    BID_ID_FIELD_NUMBER: _ClassVar[int]
    MARKETPLACE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PROPOSAL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    bid_id: str
    marketplace: str
    job_id: str
    agent_id: str
    amount: _common_pb2.Money
    proposal: str
    status: BidStatus
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, bid_id: _Optional[str] = ..., marketplace: _Optional[str] = ..., job_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., proposal: _Optional[str] = ..., status: _Optional[_Union[BidStatus, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BidEvent(_message.Message):
    __slots__ = ("event_id", "bid_id", "previous_status", "new_status", "reason", "actor", "created_at")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    BID_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATUS_FIELD_NUMBER: _ClassVar[int]
    NEW_STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    bid_id: str
    previous_status: BidStatus
    new_status: BidStatus
    reason: str
    actor: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., bid_id: _Optional[str] = ..., previous_status: _Optional[_Union[BidStatus, str]] = ..., new_status: _Optional[_Union[BidStatus, str]] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("event_id", "task_id", "previous_status", "new_status", "execution_id", "actor", "created_at")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATUS_FIELD_NUMBER: _ClassVar[int]
    NEW_STATUS_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    task_id: str
    previous_status: TaskStatus
    new_status: TaskStatus
    execution_id: str
    actor: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., task_id: _Optional[str] = ..., previous_status: _Optional[_Union[TaskStatus, str]] = ..., new_status: _Optional[_Union[TaskStatus, str]] = ..., execution_id: _Optional[str] = ..., actor: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("task_id", "client_email", "result", "amount", "delivered_at")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_EMAIL_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_AT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    client_email: str
    result: str
    amount: _common_pb2.Money
    delivered_at: _timestamp_pb2.Timestamp
    def __init__(self, task_id: _Optional[str] = ..., client_email: _Optional[str] = ..., result: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., delivered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateTaskRequest(_message.Message):
    __slots__ = ("request_id", "client_email", "title", "description", "budget")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_EMAIL_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    client_email: str
    title: str
    description: str
    budget: _common_pb2.Money
    def __init__(self, request_id: _Optional[str] = ..., client_email: _Optional[str] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., budget: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class CreateTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("client_email", "status", "created_after", "created_before", "page_size", "page_token")
    CLIENT_EMAIL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    client_email: str
    status: TaskStatus
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, client_email: _Optional[str] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    next_page_token: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PlaceBidRequest(_message.Message):
    __slots__ = ("request_id", "marketplace", "job_id", "agent_id", "amount", "proposal")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MARKETPLACE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PROPOSAL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    marketplace: str
    job_id: str
    agent_id: str
    amount: _common_pb2.Money
    proposal: str
    def __init__(self, request_id: _Optional[str] = ..., marketplace: _Optional[str] = ..., job_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., proposal: _Optional[str] = ...) -> None: ...

class PlaceBidResponse(_message.Message):
    __slots__ = ("bid",)
    BID_FIELD_NUMBER: _ClassVar[int]
    bid: Bid
    def __init__(self, bid: _Optional[_Union[Bid, _Mapping]] = ...) -> None: ...

class GetBidRequest(_message.Message):
    __slots__ = ("bid_id",)
    BID_ID_FIELD_NUMBER: _ClassVar[int]
    bid_id: str
    def __init__(self, bid_id: _Optional[str] = ...) -> None: ...

class GetBidResponse(_message.Message):
    __slots__ = ("bid",)
    BID_FIELD_NUMBER: _ClassVar[int]
    bid: Bid
    def __init__(self, bid: _Optional[_Union[Bid, _Mapping]] = ...) -> None: ...

class ListBidsRequest(_message.Message):
    __slots__ = ("marketplace", "job_id", "agent_id", "status", "page_size", "page_token")
    MARKETPLACE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    marketplace: str
    job_id: str
    agent_id: str
    status: BidStatus
    page_size: int
    page_token: str
    def __init__(self, marketplace: _Optional[str] = ..., job_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., status: _Optional[_Union[BidStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListBidsResponse(_message.Message):
    __slots__ = ("bids", "next_page_token")
    BIDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    bids: _containers.RepeatedCompositeFieldContainer[Bid]
    next_page_token: str
    def __init__(self, bids: _Optional[_Iterable[_Union[Bid, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WithdrawBidRequest(_message.Message):
    __slots__ = ("bid_id", "event_id", "reason")
    BID_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    bid_id: str
    event_id: str
    reason: str
    def __init__(self, bid_id: _Optional[str] = ..., event_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class WithdrawBidResponse(_message.Message):
    __slots__ = ("bid", "event")
    BID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    bid: Bid
    event: BidEvent
    def __init__(self, bid: _Optional[_Union[Bid, _Mapping]] = ..., event: _Optional[_Union[BidEvent, _Mapping]] = ...) -> None: ...

class AcceptBidRequest(_message.Message):
    __slots__ = ("bid_id", "event_id", "client_email", "title", "description")
    BID_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_EMAIL_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    bid_id: str
    event_id: str
    client_email: str
    title: str
    description: str
    def __init__(self, bid_id: _Optional[str] = ..., event_id: _Optional[str] = ..., client_email: _Optional[str] = ..., title: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class AcceptBidResponse(_message.Message):
    __slots__ = ("bid", "task", "event")
    BID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    bid: Bid
    task: Task
    event: BidEvent
    def __init__(self, bid: _Optional[_Union[Bid, _Mapping]] = ..., task: _Optional[_Union[Task, _Mapping]] = ..., event: _Optional[_Union[BidEvent, _Mapping]] = ...) -> None: ...

class RejectBidRequest(_message.Message):
    __slots__ = ("bid_id", "event_id", "reason")
    BID_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    bid_id: str
    event_id: str
    reason: str
    def __init__(self, bid_id: _Optional[str] = ..., event_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RejectBidResponse(_message.Message):
    __slots__ = ("bid", "event")
    BID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    bid: Bid
    event: BidEvent
    def __init__(self, bid: _Optional[_Union[Bid, _Mapping]] = ..., event: _Optional[_Union[BidEvent, _Mapping]] = ...) -> None: ...

class ListBidEventsRequest(_message.Message):
    __slots__ = ("bid_id", "page_size", "page_token")
    BID_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    bid_id: str
    page_size: int
    page_token: str
    def __init__(self, bid_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListBidEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[BidEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[BidEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListTaskEventsRequest(_message.Message):
    __slots__ = ("task_id", "page_size", "page_token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    page_size: int
    page_token: str
    def __init__(self, task_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTaskEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[TaskEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[TaskEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RevokeDeliveryTokenRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class RevokeDeliveryTokenResponse(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class StartTaskRequest(_message.Message):
    __slots__ = ("task_id", "execution_id", "event_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    execution_id: str
    event_id: str
    def __init__(self, task_id: _Optional[str] = ..., execution_id: _Optional[str] = ..., event_id: _Optional[str] = ...) -> None: ...

class StartTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class CompleteTaskRequest(_message.Message):
    __slots__ = ("task_id", "execution_id", "event_id", "result")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    execution_id: str
    event_id: str
    result: str
    def __init__(self, task_id: _Optional[str] = ..., execution_id: _Optional[str] = ..., event_id: _Optional[str] = ..., result: _Optional[str] = ...) -> None: ...

class CompleteTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class FailTaskRequest(_message.Message):
    __slots__ = ("task_id", "execution_id", "event_id", "error_type", "message")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    execution_id: str
    event_id: str
    error_type: _common_pb2.ErrorType
    message: str
    def __init__(self, task_id: _Optional[str] = ..., execution_id: _Optional[str] = ..., event_id: _Optional[str] = ..., error_type: _Optional[_Union[_common_pb2.ErrorType, str]] = ..., message: _Optional[str] = ...) -> None: ...

class FailTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class CreateDeliveryTokenRequest(_message.Message):
    __slots__ = ("task_id", "ttl")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    ttl: _duration_pb2.Duration
    def __init__(self, task_id: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class CreateDeliveryTokenResponse(_message.Message):
    __slots__ = ("token", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, token: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetDeliveryRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class GetDeliveryResponse(_message.Message):
    __slots__ = ("delivery",)
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    delivery: Delivery
    def __init__(self, delivery: _Optional[_Union[Delivery, _Mapping]] = ...) -> None: ...
