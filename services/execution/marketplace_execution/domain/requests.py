"""Request models validated at the edge (pydantic v2).

The api layer turns a protobuf request into a dict and calls :func:`parse`;
a failure becomes INVALID_ARGUMENT listing every violated field.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, TypeVar

import jsonschema
from marketplace_common.errors import FieldViolation, InvalidArgumentError
from marketplace_common.idempotency import UUID_CODEC, IdempotencyKey, request_fingerprint
from marketplace_common.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, page_token_problem
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from marketplace_execution.domain.models import DEFAULT_MAX_ATTEMPTS, ExecutionStatus
from marketplace_execution.domain.text import has_invalid_text

MAX_PROMPT_CHARS = 100_000
MAX_MODEL_CHARS = 200
MAX_SCHEMA_CHARS = 100_000
MAX_ATTEMPTS_LIMIT = 10

M = TypeVar("M", bound=BaseModel)


def _check_schema(text: str) -> str:
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"output_schema is not JSON: {exc.msg}") from None
    except RecursionError:
        raise ValueError("output_schema nests too deeply") from None
    if not isinstance(schema, dict):
        raise ValueError("output_schema must be a JSON object")  # noqa: TRY004 (pydantic)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"output_schema is not a valid JSON Schema: {exc.message}") from None
    except RecursionError:
        raise ValueError("output_schema nests too deeply") from None
    return text


class _Edge(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class LLMJob(_Edge):
    """What the attempt loop needs: shared by SubmitExecution and Complete."""

    prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    model: str = Field(default="", max_length=MAX_MODEL_CHARS)
    output_schema: str | None = Field(default=None, max_length=MAX_SCHEMA_CHARS)
    max_attempts: int = Field(default=0, ge=0, le=MAX_ATTEMPTS_LIMIT)

    @field_validator("prompt", "model", "output_schema")
    @classmethod
    def _storable_text(cls, value: str | None) -> str | None:
        # PostgreSQL refuses NUL in text and no database stores a lone surrogate:
        # refuse them here, naming the field, so both backends answer alike.
        if value is not None and has_invalid_text(value):
            raise ValueError("must not contain NUL characters or unpaired surrogates")
        return value

    @field_validator("output_schema", mode="before")
    @classmethod
    def _empty_schema_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("output_schema")
    @classmethod
    def _valid_schema(cls, value: str | None) -> str | None:
        return None if value is None else _check_schema(value)

    @property
    def attempts_budget(self) -> int:
        """max_attempts with 0 meaning the default."""
        return self.max_attempts or DEFAULT_MAX_ATTEMPTS

    @property
    def schema_dict(self) -> dict[str, Any] | None:
        """The output schema parsed, or None."""
        return None if self.output_schema is None else dict(json.loads(self.output_schema))


#: The scope of SubmitExecution's keys in the kit's ``idempotency_keys`` table.
SUBMIT_SCOPE = "SubmitExecution"


def submit_key(request_id: uuid.UUID, fingerprint: str) -> IdempotencyKey[uuid.UUID]:
    """SubmitExecution's idempotency key: its answer is the id of the execution it
    created, so a repeat gets back that execution as it is now (not as it was)."""
    return IdempotencyKey(SUBMIT_SCOPE, str(request_id), fingerprint, UUID_CODEC, "request_id")


class SubmitRequest(LLMJob):
    """SubmitExecution: idempotent on request_id."""

    request_id: uuid.UUID
    task_id: uuid.UUID

    def fingerprint(self, actor: str) -> str:
        """A digest of the caller (``role:subject``) and everything but request_id, to
        tell a repeat from a reuse: the same request_id from another principal is
        never a repeat, so it never replays someone else's answer."""
        fields = self.model_dump(mode="json", exclude={"request_id"})
        return request_fingerprint("SubmitExecution", actor, fields)


class CompleteRequest(LLMJob):
    """Complete: the prompt is required."""

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)


class ListRequest(_Edge):
    """ListExecutions (AIP-158)."""

    task_id: uuid.UUID | None = None
    status: ExecutionStatus | None = None
    page_size: int = Field(default=0, ge=0)
    page_token: str = Field(default="", max_length=1000)

    @field_validator("task_id", mode="before")
    @classmethod
    def _empty_task_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def limit(self) -> int:
        """The page size to use: 0 means the default, and anything above the maximum is capped."""
        return min(self.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


class ExecutionRef(_Edge):
    """Get/Watch/Cancel: one execution by id."""

    execution_id: uuid.UUID


def parse(model: type[M], data: dict[str, Any]) -> M:
    """Validate ``data`` into ``model`` or raise InvalidArgumentError naming every bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        violations = [
            FieldViolation(
                field=".".join(str(p) for p in err["loc"]) or "request",
                description=err["msg"],
            )
            for err in exc.errors(include_url=False)
        ]
        # Page tokens are decoded after validation (against the filters): when other
        # fields failed, a malformed one is named with them.
        token = data.get("page_token")
        problem = page_token_problem(token) if isinstance(token, str) else None
        if problem and "page_token" not in {v.field for v in violations}:
            violations.append(FieldViolation("page_token", problem))
        fields = ", ".join(v.field for v in violations)
        raise InvalidArgumentError(f"invalid request: {fields}", violations=violations) from None
