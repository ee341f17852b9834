"""Robustness: no request can crash, hang or get INTERNAL from either service.

Both services run in-process (SQLite, port 0, bearer tokens), the execution
service wired to the real bids service. For every RPC, Hypothesis generates
requests from the message descriptors: edge strings (empty, whitespace, NUL,
unicode, 1 MB), ints at the int32/int64 edges, unknown enum numbers, missing
sub-messages, Money edge cases, Timestamps around years 1 and 9999 with bad
nanos, negative and huge Durations, garbage / base64 / truncated page tokens,
and garbage or deeply nested output_schema JSON, sent as a random caller.
Raw bodies that are not protobuf (or are, by chance) go through a generic
channel with identity serializers.

Every call must end within its deadline with a code other than INTERNAL,
UNKNOWN or DATA_LOSS; every error carries exactly one ErrorInfo, and
INVALID_ARGUMENT a BadRequest with at least one field violation. Both
services must still answer health afterwards. Examples are bounded and
derandomized (the same run every time) to keep the module well under a minute.
"""

from __future__ import annotations

import base64
import json
import string
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marketplace.bids.v1 import bids_pb2
from marketplace.common.v1 import common_pb2
from marketplace.execution.v1 import execution_pb2
from marketplace_bids.migrations import SCRIPT_LOCATION
from marketplace_bids.server import create_server as create_bids_server
from marketplace_bids.settings import BidsSettings
from marketplace_common.auth import hash_token
from marketplace_common.migrations import upgrade_async
from marketplace_execution.migrations import MIGRATIONS_DIR
from marketplace_execution.server import create_server as create_execution_server
from marketplace_execution.settings import ExecutionSettings

pytestmark = pytest.mark.asyncio(loop_scope="module")

CALL_TIMEOUT = 10.0
SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
# Codes grpc itself produces (no status details): a body over max_message_bytes.
TRANSPORT_CODES = {grpc.StatusCode.RESOURCE_EXHAUSTED}
BIDS = bids_pb2.DESCRIPTOR.services_by_name["BidService"]
EXECUTION = execution_pb2.DESCRIPTOR.services_by_name["ExecutionService"]
METHODS: list[MethodDescriptor] = [*BIDS.methods, *EXECUTION.methods]

# name -> (raw token, role, subject); "anonymous" sends no token, "forged" an unknown one.
PRINCIPALS: dict[str, tuple[str, str, str]] = {
    "client": ("robust-client-" + "a" * 32, "client", "alice@example.com"),
    "agent": ("robust-agent-" + "b" * 32, "agent", "agent-1"),
    "service": ("robust-service-" + "c" * 32, "service", "execution"),
    "admin": ("robust-admin-" + "d" * 32, "admin", "ops"),
}
CALLERS = [*PRINCIPALS, "anonymous", "forged"]

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


# --- the services --------------------------------------------------------------------


@dataclass
class Services:
    channels: dict[str, grpc.aio.Channel]
    codes: Counter[str] = field(default_factory=Counter)

    def channel_for(self, method: MethodDescriptor) -> grpc.aio.Channel:
        return self.channels[method.containing_service.full_name]


def _token_entries() -> list[str]:
    return [f"{hash_token(raw)}={role}:{subject}" for raw, role, subject in PRINCIPALS.values()]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def services(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Services]:
    base: Path = tmp_path_factory.mktemp("robustness")
    bids_url = f"sqlite+aiosqlite:///{base / 'bids.db'}"
    execution_url = f"sqlite+aiosqlite:///{base / 'execution.db'}"
    await upgrade_async(bids_url, SCRIPT_LOCATION)
    await upgrade_async(execution_url, MIGRATIONS_DIR)
    common: dict[str, Any] = {
        "grpc_port": 0,
        "metrics_port": 0,
        "auth_tokens": _token_entries(),
        "shutdown_grace_seconds": 1.0,
    }
    bids, bids_port = await create_bids_server(BidsSettings(database_url=bids_url, **common))
    execution, execution_port = await create_execution_server(
        ExecutionSettings(
            database_url=execution_url,
            bids_target=f"127.0.0.1:{bids_port}",
            bids_token=PRINCIPALS["service"][0],
            workers=1,
            pacing_jitter=0.0,
            llm_backoff_base_seconds=0.01,
            llm_backoff_max_seconds=0.05,
            **common,
        )
    )
    channels = {
        BIDS.full_name: grpc.aio.insecure_channel(f"127.0.0.1:{bids_port}"),
        EXECUTION.full_name: grpc.aio.insecure_channel(f"127.0.0.1:{execution_port}"),
    }
    try:
        yield Services(channels)
    finally:
        for channel in channels.values():
            await channel.close()
        await execution.stop(0.5)
        await bids.stop(0.5)


# --- strategies ------------------------------------------------------------------------

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
NO_SURROGATES = st.characters(blacklist_categories=["Cs"])

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


def _field_strategy(fd: FieldDescriptor) -> st.SearchStrategy[Any]:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return st.none() | SUB_MESSAGES[fd.message_type.full_name]  # None: left unset
    if fd.type == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in fd.enum_type.values]
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
        return st.none() | PLAUSIBLE_MESSAGES[fd.message_type.full_name]
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in fd.enum_type.values])
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


def _edge_values(fd: FieldDescriptor) -> list[Any]:
    """The curated edge values of one field, for the field-by-field sweep."""
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return EDGE_MESSAGES[fd.message_type.full_name]
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return [v.number for v in fd.enum_type.values] + [-1, 99, *INT32]
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
        elif fd.message_type is not None and fd.message_type.full_name.endswith("Money"):
            base[fd.name] = common_pb2.Money(currency_code="EUR", units=10)
    return base


def sweep(descriptor: Descriptor) -> list[Message]:
    """A plausible request per (field, edge value), that field alone swapped."""
    cls: Callable[..., Message] = getattr(_module_of(descriptor), descriptor.name)
    base = _plausible_base(descriptor)
    requests = []
    for fd in descriptor.fields:
        for value in _edge_values(fd):
            values = {**base, fd.name: value}
            requests.append(cls(**{k: v for k, v in values.items() if v is not None}))
    return requests


def _module_of(descriptor: Descriptor) -> Any:
    return {"marketplace.bids.v1": bids_pb2, "marketplace.execution.v1": execution_pb2}[
        descriptor.file.package
    ]


# --- calling and checking ---------------------------------------------------------------


def _metadata(caller: str) -> tuple[tuple[str, str], ...]:
    if caller == "anonymous":
        return ()
    token = "forged-" + "z" * 40 if caller == "forged" else PRINCIPALS[caller][0]
    return (("authorization", f"Bearer {token}"),)


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


async def _invoke(
    services: Services,
    method: MethodDescriptor,
    body: bytes,
    caller: str,
) -> grpc.aio.AioRpcError | None:
    """Send one raw body; None on success, else the error. Streams are read to the end
    (at most a few messages)."""
    channel = services.channel_for(method)
    metadata = _metadata(caller)
    try:
        if method.server_streaming:
            call = channel.unary_stream(_path(method))(
                body, timeout=CALL_TIMEOUT, metadata=metadata
            )
            received = 0
            async for _ in call:
                received += 1
                if received >= 5:
                    call.cancel()
                    break
        else:
            await channel.unary_unary(_path(method))(body, timeout=CALL_TIMEOUT, metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        return exc
    return None


def _status_details(exc: grpc.aio.AioRpcError) -> tuple[int, list[str]]:
    """(ErrorInfo count, BadRequest field paths) of a failed call."""
    raw = dict(exc.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw is not None, f"{exc.code()} without status details: {exc.details()}"
    status = status_pb2.Status.FromString(raw)
    infos, fields = 0, []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            infos += 1
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return infos, fields


async def check_call(
    services: Services, method: MethodDescriptor, body: bytes, caller: str
) -> grpc.StatusCode:
    started = time.monotonic()
    error = await _invoke(services, method, body, caller)
    elapsed = time.monotonic() - started
    code = grpc.StatusCode.OK if error is None else error.code()
    services.codes[code.name] += 1
    where = f"{method.name} as {caller}"
    assert elapsed < CALL_TIMEOUT, f"{where} took {elapsed:.1f}s"
    if error is None:
        return code
    assert code not in SERVER_FAULTS, f"{where}: {code.name}: {error.details()}"
    assert code is not grpc.StatusCode.DEADLINE_EXCEEDED, f"{where} hung: {error.details()}"
    if code in TRANSPORT_CODES and len(body) > 4 * 1024 * 1024:
        return code
    infos, fields = _status_details(error)
    assert infos == 1, f"{where}: {code.name} with {infos} ErrorInfo"
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        assert fields, f"{where}: INVALID_ARGUMENT without field violations: {error.details()}"
    return code


async def assert_healthy(services: Services) -> None:
    for channel in services.channels.values():
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


# --- the tests ------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@HYPOTHESIS
@given(data=st.data())
async def test_generated_requests_never_fault_or_hang(
    services: Services, method: MethodDescriptor, data: st.DataObject
) -> None:
    request = data.draw(requests_for(method.input_type), label="request")
    caller = data.draw(st.sampled_from(CALLERS), label="caller")
    await check_call(services, method, request.SerializeToString(), caller)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
async def test_every_field_edge_value_never_faults_or_hangs(
    services: Services, method: MethodDescriptor
) -> None:
    # Deterministic: each curated edge value in each field, as admin (past every
    # role check) and as the role the method is for, so nothing rests on luck.
    caller = "agent" if method.containing_service is EXECUTION else "admin"
    for request in sweep(method.input_type):
        for who in dict.fromkeys(["admin", caller]):
            await check_call(services, method, request.SerializeToString(), who)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@settings(HYPOTHESIS, max_examples=15)
@given(body=st.binary(max_size=512), caller=st.sampled_from(CALLERS))
async def test_raw_bodies_never_fault_or_hang(
    services: Services, method: MethodDescriptor, body: bytes, caller: str
) -> None:
    # Random bytes are often a valid message by chance (protobuf is permissive):
    # those are ordinary requests; the rest must be INVALID_ARGUMENT.
    await check_call(services, method, body, caller)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
async def test_undecodable_body_is_invalid_argument(
    services: Services, method: MethodDescriptor
) -> None:
    # grpc.aio alone answers UNKNOWN here (DecodeError before any handler code);
    # the kit's error mapping decodes leniently and names the "request" field.
    error = await _invoke(services, method, b"\xff\xff\xff\xff", "admin")
    assert error is not None
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert _status_details(error) == (1, ["request"])


async def test_services_still_healthy_afterwards(services: Services) -> None:
    await assert_healthy(services)
    print(f"robustness calls by code: {dict(services.codes)}")
