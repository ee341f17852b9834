"""Caller input that used to escape validation (found by tests/integration/robustness/).

Each answered INTERNAL: a page token whose "i" is not a string (AttributeError
in uuid.UUID), JSON nested past the recursion limit in a page token or an
output_schema (RecursionError), and an output_schema whose $ref does not
resolve (a referencing error while validating the answer). A remote $ref
also made the server fetch a URL the caller chose.
"""

from __future__ import annotations

import base64
import json
import socket

import pytest
from marketplace_common.errors import InvalidArgumentError
from marketplace_common.paging import decode_page_token
from marketplace_execution.domain.output_validation import compile_schema, validate_output
from marketplace_execution.domain.requests import CompleteRequest, parse


def _token(payload: bytes) -> str:
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


@pytest.mark.parametrize(
    "payload",
    [
        json.dumps({"c": "2024-01-01T00:00:00+00:00", "i": 5, "f": "x"}).encode(),
        json.dumps({"c": "2024-01-01T00:00:00+00:00", "i": [1], "f": "x"}).encode(),
        b"[" * 740,
    ],
    ids=["int-id", "list-id", "deep"],
)
def test_malformed_page_token_is_invalid_argument(payload: bytes) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        decode_page_token(_token(payload), "x")
    assert [v.field for v in caught.value.violations] == ["page_token"]


@pytest.mark.parametrize(
    "schema",
    ["[" * 50_000, '{"items":' * 2_000 + "{}" + "}" * 2_000],
    ids=["deep-array", "deep-valid-schema"],
)
def test_deeply_nested_output_schema_is_invalid_argument(schema: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse(CompleteRequest, {"prompt": "hi", "output_schema": schema})
    assert [v.field for v in caught.value.violations] == ["output_schema"]


def test_unresolvable_ref_is_the_callers_error() -> None:
    validator = compile_schema({"$ref": "#/definitions/missing"})
    with pytest.raises(InvalidArgumentError) as caught:
        validate_output("{}", validator)
    assert [v.field for v in caught.value.violations] == ["output_schema"]


def test_remote_ref_is_never_fetched() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        validator = compile_schema({"$ref": f"http://127.0.0.1:{port}/schema.json"})
        with pytest.raises(InvalidArgumentError):
            validate_output("{}", validator)
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_meta_schema_ref_still_resolves() -> None:
    validator = compile_schema({"$ref": "https://json-schema.org/draft/2020-12/schema"})
    assert validate_output('{"type": "object"}', validator) == {"type": "object"}
