"""Validation of model output against an ``output_schema``.

A model answer that is not JSON, or JSON that does not match the schema, is
LLM_FIXABLE: the attempt loop re-asks with the violations fed back. A schema
that is itself invalid is the caller's mistake (InvalidArgumentError) and is
found before any call is made; so is a ``$ref`` that does not resolve, found
when an answer is validated. References are resolved within the schema (and
the JSON Schema meta-schemas) only: nothing is ever fetched over the network.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator
from marketplace_common.errors import FieldViolation, InvalidArgumentError, LLMFixableError
from referencing import Registry
from referencing.exceptions import Unresolvable

_MAX_VIOLATIONS = 10
_MAX_DESCRIPTION = 300


def compile_schema(schema: Mapping[str, Any]) -> Validator:
    """A validator for ``schema``; InvalidArgumentError when the schema is not valid JSON Schema.

    Checking a schema costs far more than validating an answer, and a service
    sees the same few schemas again and again: compiled validators are cached.
    """
    try:
        key = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError):
        violation = FieldViolation("output_schema", "the schema is not JSON")
        raise InvalidArgumentError("output_schema is not JSON", violations=[violation]) from None
    return _compile(key)


@functools.lru_cache(maxsize=256)
def _compile(key: str) -> Validator:
    schema = json.loads(key)
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(dict(schema))
    except jsonschema.SchemaError as exc:
        violation = FieldViolation("output_schema", _cut(exc.message))
        raise InvalidArgumentError(
            "output_schema is not a valid JSON Schema", violations=[violation]
        ) from None
    # A registry that retrieves nothing (jsonschema adds the meta-schemas): a remote
    # $ref is unresolvable instead of an HTTP request chosen by the caller, which
    # the default registry would make.
    return cls(dict(schema), registry=Registry())


def validate_output(text: str, validator: Validator) -> Any:
    """The parsed answer, or LLMFixableError naming every violation (at most 10)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        violation = FieldViolation("$", _cut(f"the answer is not valid JSON: {exc}"))
        raise LLMFixableError("the model's answer is not JSON", violations=[violation]) from None
    try:
        errors = sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
        if errors:
            first = best_match(errors).message
    except Unresolvable as exc:
        violation = FieldViolation("output_schema", _cut(f"unresolvable $ref: {exc}"))
        raise InvalidArgumentError(
            "output_schema has a $ref that does not resolve", violations=[violation]
        ) from None
    except RecursionError:
        # A recursive schema ({"items": {"$ref": "#"}}) follows the answer as deep
        # as it goes: an answer nested past the recursion limit cannot be checked.
        # That is the answer's fault, so the model is re-asked (twice the same: PERMANENT).
        violation = FieldViolation("$", "the answer nests too deeply to validate")
        raise LLMFixableError(
            "the model's answer nests too deeply to validate", violations=[violation]
        ) from None
    if errors:
        violations = [
            FieldViolation(_path(e.absolute_path), _cut(e.message))
            for e in errors[:_MAX_VIOLATIONS]
        ]
        raise LLMFixableError(
            f"the model's answer does not match the output schema: {_cut(first)}",
            violations=violations,
        )
    return value


def feedback_message(violations: tuple[FieldViolation, ...]) -> str:
    """The user message that feeds validation errors back to the model."""
    lines = "\n".join(f"- at {v.field}: {v.description}" for v in violations)
    return (
        "Your previous answer failed validation against the required JSON Schema:\n"
        f"{lines}\n"
        "Answer again with only a JSON value that satisfies the schema."
    )


def _path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_DESCRIPTION else text[: _MAX_DESCRIPTION - 3] + "..."
