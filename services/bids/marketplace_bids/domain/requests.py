"""Validated requests: every RPC's input checked at the edge with pydantic v2.

The servicer turns a protobuf request into a plain mapping and calls
:func:`parse`; a failure becomes one InvalidArgumentError listing every
violated field by its proto path (``budget.nanos``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, TypeVar

from marketplace_common.errors import ErrorType, FieldViolation, InvalidArgumentError
from marketplace_common.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, page_token_problem
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from marketplace_bids.domain.values import (
    MAX_ID,
    BidStatus,
    Identifier,
    LongText,
    MessageText,
    Money,
    Reason,
    ResultText,
    TaskStatus,
    Title,
    Uuid,
    line_errors,
    violation_field,
)


def _page_size(value: int) -> int:
    # AIP-158: 0 means the default, above the maximum is coerced down to it.
    if value == 0:
        return DEFAULT_PAGE_SIZE
    return min(value, MAX_PAGE_SIZE)


def _empty_to_none(value: Any) -> Any:
    return None if value == "" else value


def _lower(value: str) -> str:
    return value.lower()


Email = Annotated[EmailStr, AfterValidator(_lower)]
PageSize = Annotated[int, Field(ge=0, le=2**31 - 1), AfterValidator(_page_size)]
PageToken = Annotated[str, Field(max_length=2048)]
OptionalEmail = Annotated[Email | None, BeforeValidator(_empty_to_none)]
OptionalIdentifier = Annotated[Identifier | None, BeforeValidator(_empty_to_none)]
ExecutionId = Annotated[Uuid, Field(max_length=MAX_ID)]


class Request(BaseModel):
    """Base of the request models: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class CreateTaskRequest(Request):
    request_id: Uuid
    client_email: Email
    title: Title
    description: LongText = ""
    budget: Money


class GetTaskRequest(Request):
    task_id: Uuid


class ListTasksRequest(Request):
    client_email: OptionalEmail = None
    status: TaskStatus | None = None
    created_after: AwareDatetime | None = None
    created_before: AwareDatetime | None = None
    page_size: PageSize = DEFAULT_PAGE_SIZE
    page_token: PageToken = ""

    @model_validator(mode="wrap")
    @classmethod
    def _ordered_range(
        cls, data: Any, handler: ModelWrapValidatorHandler[ListTasksRequest]
    ) -> ListTasksRequest:
        # An "after" validator would not run once another field failed, hiding a
        # reversed range: the raw values are checked too and reported together
        # with the field errors (every violated field is listed).
        try:
            request = handler(data)
        except ValidationError as exc:
            raw = data if isinstance(data, Mapping) else {}
            if not _reversed(raw.get("created_after"), raw.get("created_before")):
                raise
            details = [*line_errors(exc), _range_error(data)]
            raise ValidationError.from_exception_data(exc.title, details) from None
        if _reversed(request.created_after, request.created_before):
            raise PydanticCustomError(
                "range",
                "created_before must be later than created_after",
                {"field": "created_before"},
            )
        return request


def _reversed(after: object, before: object) -> bool:
    """Both bounds are aware datetimes and created_after is not before created_before."""
    if not (isinstance(after, datetime) and isinstance(before, datetime)):
        return False
    if after.tzinfo is None or before.tzinfo is None:
        return False
    return after >= before


def _range_error(data: Any) -> InitErrorDetails:
    return InitErrorDetails(
        type=PydanticCustomError("range", "created_before must be later than created_after"),
        loc=("created_before",),
        input=data,
    )


class PlaceBidRequest(Request):
    request_id: Uuid
    marketplace: Identifier
    job_id: Identifier
    agent_id: Identifier
    amount: Money
    proposal: LongText = ""


class GetBidRequest(Request):
    bid_id: Uuid


class ListBidsRequest(Request):
    marketplace: OptionalIdentifier = None
    job_id: OptionalIdentifier = None
    agent_id: OptionalIdentifier = None
    status: BidStatus | None = None
    page_size: PageSize = DEFAULT_PAGE_SIZE
    page_token: PageToken = ""


class WithdrawBidRequest(Request):
    bid_id: Uuid
    event_id: Uuid
    reason: Reason = ""


class RejectBidRequest(Request):
    bid_id: Uuid
    event_id: Uuid
    reason: Reason = ""


class AcceptBidRequest(Request):
    bid_id: Uuid
    event_id: Uuid
    client_email: Email
    title: Title
    description: LongText = ""


class ListBidEventsRequest(Request):
    bid_id: Uuid
    page_size: PageSize = DEFAULT_PAGE_SIZE
    page_token: PageToken = ""


class ListTaskEventsRequest(Request):
    task_id: Uuid
    page_size: PageSize = DEFAULT_PAGE_SIZE
    page_token: PageToken = ""


class StartTaskRequest(Request):
    task_id: Uuid
    execution_id: ExecutionId
    event_id: Uuid


class CompleteTaskRequest(Request):
    task_id: Uuid
    execution_id: ExecutionId
    event_id: Uuid
    result: ResultText = ""


class FailTaskRequest(Request):
    task_id: Uuid
    execution_id: ExecutionId
    event_id: Uuid
    error_type: ErrorType
    message: MessageText = ""


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Mapping[str, Any]) -> M:
    """Validate ``data`` into ``model`` or raise InvalidArgumentError naming every bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_argument(exc, _page_token_violations(model, data)) from None


def _page_token_violations(model: type[BaseModel], data: Mapping[str, Any]) -> list[FieldViolation]:
    # Page tokens are decoded after validation, against the filters; when other
    # fields already failed, a malformed one is named with them.
    token = data.get("page_token")
    if "page_token" not in model.model_fields or not isinstance(token, str):
        return []
    problem = page_token_problem(token)
    return [] if problem is None else [FieldViolation("page_token", problem)]


def invalid_argument(
    exc: ValidationError, extra: list[FieldViolation] | None = None
) -> InvalidArgumentError:
    """One InvalidArgumentError with a FieldViolation per pydantic error (and ``extra``)."""
    violations: list[FieldViolation] = []
    for error in exc.errors(include_url=False, include_input=False):
        field = violation_field(error["loc"], error.get("ctx"))
        violations.append(FieldViolation(field, error["msg"]))
    seen = {v.field for v in violations}
    violations += [v for v in extra or [] if v.field not in seen]
    fields = ", ".join(dict.fromkeys(v.field for v in violations))
    return InvalidArgumentError(f"invalid request: {fields}", violations=violations)
