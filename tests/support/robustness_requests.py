"""Requests for the robustness tests, generated from the message descriptors.

Edge strings (empty, whitespace, NUL, unicode, 1 MB), ints at the int32/int64
edges, unknown enum numbers, missing sub-messages, Money edge cases,
Timestamps around years 1 and 9999 with bad nanos, negative and huge
Durations, garbage / base64 / truncated page tokens, and garbage or deeply
nested output_schema JSON. :func:`requests_for` is a Hypothesis strategy of
whole requests; :func:`sweep` and :func:`edge_values` give the curated edges
field by field, deterministically.
"""

from __future__ import annotations

import base64
import json
import string
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from marketplace.bids.v1 import bids_pb2
from marketplace.common.v1 import common_pb2
from marketplace.execution.v1 import execution_pb2

# Bounded and derandomized: the same examples every run.
HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,  # every call has a gRPC deadline of its own
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


# --- curated edge values ------------------------------------------------------------

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
HUGE = "x" * 1_000_000
NO_SURROGATES = st.characters(blacklist_categories=["Cs"])

EDGE_STRINGS = [
    "",
    " ",
    "\t\n\r ",
    "\x00",
    "a\x00b",
    "\u202eevil",
    "\ufeff",
    "😀" * 10,
    "é" * 300,
    "A" * 129,
    "A" * 201,
    "A" * 1_001,
    "A" * 10_001,
    "A" * 100_001,
    HUGE,
]
EDGE_IDS = ["6F1C1F3E-0000-4000-8000-000000000001", "{6f1c1f3e-0000-4000-8000-000000000001}",
            "6f1c1f3e000040008000000000000001", "6f1c1f3e-0000-4000-8000-00000000000"]  # fmt: skip
EDGE_EMAILS = ["ALICE@Example.COM", "a@b", "@", "no-at", "x" * 300 + "@example.com"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64_json(body: object) -> str:
    return _b64(json.dumps(body).encode())


_TOKEN_BODY = {"v": 1, "t": "2024-01-01T00:00:00+00:00", "c": "2024-01-01T00:00:00+00:00",
               "i": "6f1c1f3e-0000-4000-8000-000000000001", "f": "0" * 16}  # fmt: skip
EDGE_PAGE_TOKENS = [
    "!!!",
    _b64(b"\xff\xfe\x00garbage"),
    _b64_json([1, 2]),
    _b64_json("text"),
    _b64_json(_TOKEN_BODY),
    _b64_json(_TOKEN_BODY)[:17],  # truncated
    _b64_json({**_TOKEN_BODY, "i": 5}),
    _b64_json({**_TOKEN_BODY, "i": [1]}),
    _b64_json({**_TOKEN_BODY, "t": "2024-01-01T00:00:00", "c": "2024-01-01T00:00:00"}),
    _b64_json({**_TOKEN_BODY, "t": 5, "c": 5}),
    _b64(b"[" * 700),
    _b64(b"[" * 1_500),
    _b64(b'{"t":' * 300),
]
EDGE_SCHEMAS = [
    "not json",
    "[]",
    "null",
    '{"type": "object"}',
    '{"type": "nope"}',
    '{"pattern": "("}',
    '{"minimum": "x"}',
    '{"type": "object", "required": ["a"]}',
    '{"$ref": "#/definitions/missing"}',
    '{"$ref": "http://127.0.0.1:9/schema.json"}',
    '{"$ref": "https://json-schema.org/draft/2020-12/schema"}',
    "[" * 50_000,
    '{"items":' * 3_000 + "{}" + "}" * 3_000,
    '{"a":' * 400 + "1" + "}" * 400,
]
EDGE_INT32 = [0, 1, -1, 10, 11, 500, 501, *INT32]
EDGE_INT64 = [0, 1, -1, 2**53, *INT64]
YEAR_1, YEAR_9999_END = -62_135_596_800, 253_402_300_799
EDGE_NANOS = [0, -1, 999_999_999, 1_000_000_000, *INT32]
EDGE_TIMESTAMPS = [
    Timestamp(seconds=s, nanos=n)
    for s in [YEAR_1, YEAR_1 - 1, YEAR_9999_END, YEAR_9999_END + 1, 0, *INT64]
    for n in [0, -1, 999_999_999, 1_000_000_000]
]
EDGE_DURATIONS = [
    Duration(seconds=s, nanos=n)
    for s in [0, -1, 1, 86_400 * 30, 86_400 * 30 + 1, 315_576_000_001, *INT64]
    for n in [0, -1, 999_999_999, -999_999_999]
]
EDGE_MONEY = [
    common_pb2.Money(currency_code=c, units=u, nanos=n)
    for c in ["EUR", "eur", "XXX", "", "€"]
    for u, n in [
        (0, 0),
        (1, 0),
        (0, 1),
        (1, -1),
        (-1, 1),
        (-1, 0),
        (0, 1_000_000_000),
        (INT64[1], 999_999_999),
        (INT64[0], -999_999_999),
        (1, INT32[0]),
    ]
]
EDGE_MESSAGES: dict[str, list[Message | None]] = {
    "google.protobuf.Timestamp": [None, *EDGE_TIMESTAMPS],
    "google.protobuf.Duration": [None, *EDGE_DURATIONS],
    "marketplace.common.v1.Money": [None, *EDGE_MONEY],
}

# --- strategies ---------------------------------------------------------------------

edge_strings = st.one_of(
    st.sampled_from(EDGE_STRINGS),
    st.text(alphabet=string.whitespace, max_size=6),
    st.text(alphabet=NO_SURROGATES, max_size=40),
)
uuids = st.one_of(st.uuids().map(str), st.sampled_from(EDGE_IDS))
emails = st.sampled_from(["alice@example.com", *EDGE_EMAILS])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(*INT64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=NO_SURROGATES, max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet=NO_SURROGATES, max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
token_bodies = st.dictionaries(
    st.sampled_from(["v", "t", "c", "i", "f"]), json_values, max_size=5
).map(_b64_json)
page_tokens = st.one_of(
    edge_strings,
    st.sampled_from(EDGE_PAGE_TOKENS),
    st.binary(max_size=300).map(_b64),
    token_bodies,
    st.tuples(token_bodies, st.integers(0, 60)).map(lambda t: t[0][: t[1]]),  # truncated
    st.integers(1, 3000).map(lambda n: _b64(b"[" * n)),
)
output_schemas = st.one_of(edge_strings, json_values.map(json.dumps), st.sampled_from(EDGE_SCHEMAS))


def _ints(bounds: tuple[int, int], edges: list[int]) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(edges), st.integers(*bounds))


int32s = _ints(INT32, EDGE_INT32)
int64s = _ints(INT64, EDGE_INT64)
nanos = _ints(INT32, EDGE_NANOS)
timestamps = st.one_of(
    st.sampled_from(EDGE_TIMESTAMPS),
    st.builds(Timestamp, seconds=int64s, nanos=nanos),
)
durations = st.one_of(
    st.sampled_from(EDGE_DURATIONS),
    st.builds(Duration, seconds=int64s, nanos=nanos),
)
moneys = st.one_of(
    st.sampled_from(EDGE_MONEY),
    st.builds(common_pb2.Money, currency_code=edge_strings, units=int64s, nanos=nanos),
)
SUB_MESSAGES: dict[str, st.SearchStrategy[Message]] = {
    "google.protobuf.Timestamp": timestamps,
    "google.protobuf.Duration": durations,
    "marketplace.common.v1.Money": moneys,
}


def _string_strategy(name: str) -> st.SearchStrategy[str]:
    if name == "page_token":
        return page_tokens
    if name == "output_schema":
        return output_schemas
    if name.endswith("_id"):
        return st.one_of(uuids, edge_strings, st.just("agent-1"))
    if name.endswith("email"):
        return st.one_of(emails, edge_strings)
    return st.one_of(edge_strings, st.just("a plain value"))


def _message_name(fd: FieldDescriptor) -> str:
    assert fd.message_type is not None, fd.full_name
    return fd.message_type.full_name


def _enum_numbers(fd: FieldDescriptor) -> list[int]:
    assert fd.enum_type is not None, fd.full_name
    return [v.number for v in fd.enum_type.values]


def _field_strategy(fd: FieldDescriptor) -> st.SearchStrategy[Any]:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return st.none() | SUB_MESSAGES[_message_name(fd)]  # None: left unset
    if fd.type == FieldDescriptor.TYPE_ENUM:
        known = _enum_numbers(fd)
        return st.one_of(st.sampled_from(known), st.integers(*INT32))
    if fd.type == FieldDescriptor.TYPE_STRING:
        return _string_strategy(fd.name)
    if fd.type == FieldDescriptor.TYPE_INT32:
        return int32s
    if fd.type == FieldDescriptor.TYPE_INT64:
        return int64s
    raise AssertionError(f"no strategy for {fd.full_name}")


PLAUSIBLE_MESSAGES: dict[str, st.SearchStrategy[Message]] = {
    "google.protobuf.Timestamp": st.builds(
        Timestamp, seconds=st.integers(YEAR_1, YEAR_9999_END), nanos=st.integers(0, 999_999_999)
    ),
    "google.protobuf.Duration": st.builds(Duration, seconds=st.integers(1, 86_400 * 30)),
    "marketplace.common.v1.Money": st.builds(
        common_pb2.Money, currency_code=st.just("EUR"), units=st.integers(1, 1_000)
    ),
}
PLAUSIBLE_STRINGS = {
    "client_email": "alice@example.com",
    "marketplace": "upwork",
    "job_id": "job-1",
    "agent_id": "agent-1",
    "page_token": "",
    "output_schema": "",
}


def _plausible_strategy(fd: FieldDescriptor) -> st.SearchStrategy[Any]:
    """A value the service would likely accept, so generated requests also get past
    validation into the domain and storage."""
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return st.none() | PLAUSIBLE_MESSAGES[_message_name(fd)]
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from(_enum_numbers(fd))
    if fd.type == FieldDescriptor.TYPE_STRING:
        if fd.name in PLAUSIBLE_STRINGS:
            return st.just(PLAUSIBLE_STRINGS[fd.name])
        return uuids if fd.name.endswith("_id") else st.just("a plain value")
    return st.integers(0, 20)


def requests_for(descriptor: Descriptor) -> st.SearchStrategy[Message]:
    """Requests of one message type: every field from its edge strategy, or plausible
    values with one field swapped for an edge value."""
    cls: Callable[..., Message] = getattr(_module_of(descriptor), descriptor.name)
    edges = {fd.name: _field_strategy(fd) for fd in descriptor.fields}
    plausible = {fd.name: _plausible_strategy(fd) for fd in descriptor.fields}

    def mutate(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        name = st.sampled_from(sorted(edges))
        return name.flatmap(lambda n: edges[n].map(lambda value: {**base, n: value}))

    values = st.one_of(
        st.fixed_dictionaries(edges),
        st.fixed_dictionaries(plausible),
        st.fixed_dictionaries(plausible).flatmap(mutate),
    )
    return values.map(lambda v: cls(**{k: x for k, x in v.items() if x is not None}))


def edge_values(fd: FieldDescriptor) -> list[Any]:
    """The curated edge values of one field, for the field-by-field sweep."""
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return EDGE_MESSAGES[_message_name(fd)]
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return [*_enum_numbers(fd), -1, 99, *INT32]
    if fd.type == FieldDescriptor.TYPE_INT32:
        return EDGE_INT32
    if fd.type == FieldDescriptor.TYPE_INT64:
        return EDGE_INT64
    extra = {"page_token": EDGE_PAGE_TOKENS, "output_schema": EDGE_SCHEMAS}.get(fd.name, [])
    if fd.name.endswith("_id"):
        extra = EDGE_IDS
    elif fd.name.endswith("email"):
        extra = EDGE_EMAILS
    return EDGE_STRINGS + extra


def _plausible_base(descriptor: Descriptor) -> dict[str, Any]:
    base: dict[str, Any] = {}
    for fd in descriptor.fields:
        if fd.type == FieldDescriptor.TYPE_STRING:
            default = "6f1c1f3e-0000-4000-8000-000000000001" if fd.name.endswith("_id") else "x"
            base[fd.name] = PLAUSIBLE_STRINGS.get(fd.name, default)
        elif fd.message_type is not None and _message_name(fd).endswith("Money"):
            base[fd.name] = common_pb2.Money(currency_code="EUR", units=10)
    return base


def sweep(descriptor: Descriptor) -> list[Message]:
    """A plausible request per (field, edge value), that field alone swapped."""
    cls: Callable[..., Message] = getattr(_module_of(descriptor), descriptor.name)
    base = _plausible_base(descriptor)
    requests = []
    for fd in descriptor.fields:
        for value in edge_values(fd):
            values = {**base, fd.name: value}
            requests.append(cls(**{k: v for k, v in values.items() if v is not None}))
    return requests


def _module_of(descriptor: Descriptor) -> Any:
    return {"marketplace.bids.v1": bids_pb2, "marketplace.execution.v1": execution_pb2}[
        descriptor.file.package
    ]
