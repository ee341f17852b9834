"""Robustness: no request can crash, hang, answer INTERNAL or change anything it should not.

Both services run in-process (port 0, bearer tokens), the execution service
wired to the real bids service, once on SQLite and once on PostgreSQL (two
fresh databases; marked ``postgres``). For every RPC, Hypothesis generates
requests from the message descriptors: edge strings (empty, whitespace, NUL,
unicode, 1 MB), ints at the int32/int64 edges, unknown enum numbers, missing
sub-messages, Money edge cases, Timestamps around years 1 and 9999 with bad
nanos, negative and huge Durations, garbage / base64 / truncated page tokens,
and garbage or deeply nested output_schema JSON, sent as a random caller.
Raw bodies that are not protobuf (or are, by chance) go through a generic
channel with identity serializers.

Then real objects (tasks in every state, bids in every state, a delivery
token, executions run by the worker) get bad requests: transitions from the
wrong state, reused idempotency keys with other bodies, wrong principals,
valid and invalid fields mixed, every field swapped for edge values (and for
other spellings of real ids, and ids of other objects).

Every call must end within its deadline with a code other than INTERNAL,
UNKNOWN or DATA_LOSS; every error carries exactly one ErrorInfo, and
INVALID_ARGUMENT a BadRequest with at least one field violation. A call that
fails, succeeds on a read-only method or replays an idempotent one must leave
every table of both databases as it was (the :class:`Ledger`: a cheap change
marker per call, row counts and digests only when it moved). Both services
must still answer health afterwards. Examples are bounded and derandomized
(the same run every time); the module takes about a minute for both backends.
"""

from __future__ import annotations

import base64
import json
import string
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import grpc
import grpc.aio
import pytest
import pytest_asyncio
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
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
from sqlalchemy.engine import make_url
from table_ledger import Ledger, libpq_dsn, open_probe

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
    "bob": ("robust-bob-" + "e" * 32, "client", "bob@example.com"),
    "agent2": ("robust-agent2-" + "f" * 32, "agent", "agent-2"),
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
    ledger: Ledger
    codes: Counter[str] = field(default_factory=Counter)

    def channel_for(self, method: MethodDescriptor) -> grpc.aio.Channel:
        return self.channels[method.containing_service.full_name]


def _token_entries() -> list[str]:
    return [f"{hash_token(raw)}={role}:{subject}" for raw, role, subject in PRINCIPALS.values()]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def backend(request: pytest.FixtureRequest) -> str | None:
    """None for SQLite, else the PostgreSQL server's URL (resolved outside the event loop)."""
    if request.param == "sqlite":
        return None
    server: str = request.getfixturevalue("postgres_server_url")
    return server


@asynccontextmanager
async def _databases(server: str | None, base: Path) -> AsyncIterator[tuple[str, str]]:
    """(bids URL, execution URL): two SQLite files, or two fresh PostgreSQL databases."""
    if server is None:
        yield f"sqlite+aiosqlite:///{base / 'bids.db'}", f"sqlite+aiosqlite:///{base / 'exec.db'}"
        return
    names = [f"robust_{uuid.uuid4().hex[:16]}_{which}" for which in ("bids", "exec")]
    admin = await asyncpg.connect(libpq_dsn(server))
    try:
        for name in names:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        url = make_url(server)
        bids_url, execution_url = (
            url.set(database=name).render_as_string(hide_password=False) for name in names
        )
        yield bids_url, execution_url
    finally:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def services(
    backend: str | None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Services]:
    base = tmp_path_factory.mktemp("robustness")
    async with _databases(backend, base) as urls, _running_services(*urls) as running:
        yield running


@asynccontextmanager
async def _running_services(bids_url: str, execution_url: str) -> AsyncIterator[Services]:
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
    ledger = Ledger([await open_probe(bids_url), await open_probe(execution_url)])
    try:
        await ledger.rebase()
        yield Services(channels, ledger)
    finally:
        for probe in ledger.probes:
            await probe.close()
        for channel in channels.values():
            await channel.close(None)
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


def _edge_values(fd: FieldDescriptor) -> list[Any]:
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


def _raw(data: bytes) -> bytes:
    return data


async def _invoke(
    services: Services,
    method: MethodDescriptor,
    body: bytes,
    caller: str,
) -> tuple[grpc.aio.AioRpcError | None, list[bytes]]:
    """Send one raw body: (None, replies) on success, else (the error, replies so far).
    Streams are read to the end (at most a few messages)."""
    channel = services.channel_for(method)
    metadata = _metadata(caller)
    replies: list[bytes] = []
    try:
        if method.server_streaming:
            stream = channel.unary_stream(_path(method), _raw, _raw)(
                body, timeout=CALL_TIMEOUT, metadata=metadata
            )
            async for reply in stream:
                replies.append(reply)
                if len(replies) >= 5:
                    stream.cancel()
                    break
        else:
            unary = channel.unary_unary(_path(method), _raw, _raw)
            replies.append(await unary(body, timeout=CALL_TIMEOUT, metadata=metadata))
    except grpc.aio.AioRpcError as exc:
        return exc, replies
    return None, replies


@dataclass(frozen=True)
class Outcome:
    """How a call ended: the code, and for an error its ErrorInfo reasons and BadRequest fields."""

    code: grpc.StatusCode
    reasons: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    message: str = ""
    replies: tuple[bytes, ...] = ()

    @property
    def reason(self) -> str:
        return self.reasons[0] if self.reasons else ""


def _outcome(exc: grpc.aio.AioRpcError) -> Outcome:
    metadata: Any = exc.trailing_metadata() or ()  # (key, value) pairs; the stubs disagree
    found = [v for k, v in metadata if k == "grpc-status-details-bin"]
    raw = found[0] if found else None
    assert isinstance(raw, bytes), f"{exc.code()} without status details: {exc.details()}"
    status = status_pb2.Status.FromString(raw)
    reasons: list[str] = []
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reasons.append(info.reason)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return Outcome(exc.code(), tuple(reasons), tuple(fields), exc.details() or "")


def _status_details(exc: grpc.aio.AioRpcError) -> tuple[int, list[str]]:
    """(ErrorInfo count, BadRequest field paths) of a failed call."""
    outcome = _outcome(exc)
    return len(outcome.reasons), list(outcome.fields)


# Methods whose success may change the databases; every other call must not.
MUTATING = frozenset({
    "CreateTask", "PlaceBid", "WithdrawBid", "AcceptBid", "RejectBid", "StartTask",
    "CompleteTask", "FailTask", "CreateDeliveryToken", "SubmitExecution", "CancelExecution",
})  # fmt: skip


async def call(
    services: Services,
    method: MethodDescriptor,
    body: bytes,
    caller: str,
    *,
    replay: bool = False,
) -> Outcome:
    """One checked call: within its deadline, no server fault, one ErrorInfo, a
    BadRequest on INVALID_ARGUMENT, and no change to any table unless it succeeded
    on a method that changes state (and is no ``replay`` of an earlier call)."""
    started = time.monotonic()
    error, replies = await _invoke(services, method, body, caller)
    elapsed = time.monotonic() - started
    outcome = Outcome(grpc.StatusCode.OK, replies=tuple(replies)) if error is None else None
    where = f"{method.name} as {caller}"
    assert elapsed < CALL_TIMEOUT, f"{where} took {elapsed:.1f}s"
    if error is not None:
        code = error.code()
        assert code not in SERVER_FAULTS, f"{where}: {code.name}: {error.details()}"
        assert code is not grpc.StatusCode.DEADLINE_EXCEEDED, f"{where} hung: {error.details()}"
        if code in TRANSPORT_CODES and len(body) > 4 * 1024 * 1024:
            outcome = Outcome(code)
        else:
            outcome = _outcome(error)
            assert len(outcome.reasons) == 1, f"{where}: {code.name} with {outcome.reasons}"
            if code is grpc.StatusCode.INVALID_ARGUMENT:
                assert outcome.fields, f"{where}: INVALID_ARGUMENT without field violations"
    assert outcome is not None
    services.codes[outcome.code.name] += 1
    ok = outcome.code is grpc.StatusCode.OK
    await services.ledger.after(
        f"{where} ({outcome.code.name})", may_change=ok and method.name in MUTATING and not replay
    )
    return outcome


async def check_call(
    services: Services, method: MethodDescriptor, body: bytes, caller: str
) -> grpc.StatusCode:
    return (await call(services, method, body, caller)).code


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
    error, _ = await _invoke(services, method, b"\xff\xff\xff\xff", "admin")
    assert error is not None
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert _status_details(error) == (1, ["request"])


# --- real objects: bad requests against them -------------------------------------------

BY_NAME = {m.name: m for m in METHODS}
ALICE = PRINCIPALS["client"][2]
ERROR_TYPES = common_pb2
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.OUT_OF_RANGE,
}


def new_id() -> str:
    return str(uuid.uuid4())


async def rpc(
    services: Services, name: str, request: Message, caller: str, *, replay: bool = False
) -> Outcome:
    """A checked call (see :func:`call`) whose code is also one the contracts document."""
    body = request.SerializeToString()
    outcome = await call(services, BY_NAME[name], body, caller, replay=replay)
    assert outcome.code in DOCUMENTED, f"{name} as {caller}: {outcome}"
    return outcome


async def ok(services: Services, name: str, request: Message, caller: str) -> bytes:
    """A call that must succeed; its (first) reply."""
    outcome = await rpc(services, name, request, caller)
    assert outcome.code is grpc.StatusCode.OK, f"{name} as {caller}: {outcome}"
    return outcome.replies[0]


@dataclass
class World:
    """Real objects in every state, made through the public API."""

    services: Services
    job_of: dict[str, str] = field(default_factory=dict)
    known_ids: list[str] = field(default_factory=list)  # of every kind, for id fields

    def _job(self) -> str:
        return f"world-job-{len(self.job_of) + 1}"

    def _key(self) -> str:
        """A fresh event_id, remembered so later requests can reuse it by mistake."""
        key = new_id()
        self.known_ids.append(key)
        return key

    async def task(self, status: str = "PENDING") -> tuple[str, str]:
        """A task of alice's in ``status``; (task_id, the execution_id that moved it)."""
        created = bids_pb2.CreateTaskRequest(
            request_id=new_id(), client_email=ALICE, title="world task", description="d",
            budget=common_pb2.Money(currency_code="EUR", units=12, nanos=500_000_000),
        )  # fmt: skip
        reply = await ok(self.services, "CreateTask", created, "client")
        task_id = bids_pb2.CreateTaskResponse.FromString(reply).task.task_id
        execution_id = new_id()
        self.known_ids += [task_id, created.request_id]
        if status == "PENDING":
            return task_id, ""
        start = bids_pb2.StartTaskRequest(
            task_id=task_id, execution_id=execution_id, event_id=self._key()
        )
        await ok(self.services, "StartTask", start, "service")
        if status == "COMPLETED":
            done = bids_pb2.CompleteTaskRequest(
                task_id=task_id, execution_id=execution_id, event_id=self._key(), result="done"
            )
            await ok(self.services, "CompleteTask", done, "service")
        elif status == "FAILED":
            failed = bids_pb2.FailTaskRequest(
                task_id=task_id, execution_id=execution_id, event_id=self._key(),
                error_type=common_pb2.ERROR_TYPE_PERMANENT, message="boom",
            )  # fmt: skip
            await ok(self.services, "FailTask", failed, "service")
        return task_id, execution_id

    async def bid(self, status: str = "PENDING") -> str:
        """A bid of agent-1's in ``status`` (ACCEPTED ones by alice)."""
        placed = bids_pb2.PlaceBidRequest(
            request_id=new_id(), marketplace="upwork", job_id=self._job(), agent_id="agent-1",
            amount=common_pb2.Money(currency_code="EUR", units=7), proposal="p",
        )  # fmt: skip
        reply = await ok(self.services, "PlaceBid", placed, "agent")
        bid_id = bids_pb2.PlaceBidResponse.FromString(reply).bid.bid_id
        self.job_of[bid_id] = placed.job_id
        self.known_ids += [bid_id, placed.request_id]
        if status == "WITHDRAWN":
            withdraw = bids_pb2.WithdrawBidRequest(bid_id=bid_id, event_id=self._key())
            await ok(self.services, "WithdrawBid", withdraw, "agent")
        elif status == "REJECTED":
            reject = bids_pb2.RejectBidRequest(bid_id=bid_id, event_id=self._key(), reason="no")
            await ok(self.services, "RejectBid", reject, "client")
        elif status == "ACCEPTED":
            accept = bids_pb2.AcceptBidRequest(
                bid_id=bid_id, event_id=self._key(), client_email=ALICE, title="from bid"
            )
            await ok(self.services, "AcceptBid", accept, "client")
        return bid_id

    async def delivery_token(self, task_id: str) -> str:
        request = bids_pb2.CreateDeliveryTokenRequest(task_id=task_id)
        reply = await ok(self.services, "CreateDeliveryToken", request, "client")
        return bids_pb2.CreateDeliveryTokenResponse.FromString(reply).token

    async def execution(self) -> tuple[str, execution_pb2.SubmitExecutionRequest]:
        """A SUCCEEDED execution run by the worker: (execution_id, its request)."""
        task_id, _ = await self.task()
        submit = execution_pb2.SubmitExecutionRequest(request_id=new_id(), task_id=task_id)
        reply = await ok(self.services, "SubmitExecution", submit, "agent")
        execution_id = execution_pb2.SubmitExecutionResponse.FromString(
            reply
        ).execution.execution_id
        # call() rebased the ledger once the worker was idle, so the run is over.
        get = execution_pb2.GetExecutionRequest(execution_id=execution_id)
        reply = await ok(self.services, "GetExecution", get, "agent")
        status = execution_pb2.GetExecutionResponse.FromString(reply).execution.status
        assert status == execution_pb2.EXECUTION_STATUS_SUCCEEDED, status
        self.known_ids += [execution_id, submit.request_id]
        return execution_id, submit


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(services: Services) -> World:
    return World(services)


@dataclass(frozen=True)
class Case:
    """One request against real objects and the error the contracts promise for it."""

    name: str
    method: str
    request: Message
    caller: str
    code: grpc.StatusCode
    reason: str = ""
    fields: frozenset[str] = frozenset()
    replay: bool = False  # an idempotent repeat: OK, and nothing changes


async def run_cases(services: Services, cases: list[Case]) -> None:
    """Every case answers its code (and reason, and exactly its bad top-level fields);
    the ledger checks that none of the refused ones changed a table."""
    wrong = []
    for case in cases:
        got = await rpc(services, case.method, case.request, case.caller, replay=case.replay)
        named = frozenset(f.split(".")[0] for f in got.fields)
        if (
            got.code is not case.code
            or (case.reason and got.reason != case.reason)
            or (case.fields and named != case.fields)
        ):
            wrong.append(f"{case.name}: got {got.code.name} {got.reason} {sorted(named)} "
                         f"({got.message[:200]})")  # fmt: skip
    assert not wrong, "\n".join(wrong)


FP = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND
OK = grpc.StatusCode.OK
REUSED = "IDEMPOTENCY_KEY_REUSED"
UNKNOWN_ENUM: Any = 99  # an enum number no proto names (the stubs only allow named ones)


async def test_ledger_notices_a_change_by_a_call_that_may_not_change_anything(
    services: Services,
) -> None:
    # The checker itself: a write the ledger is told to forbid must fail it.
    request = bids_pb2.CreateTaskRequest(
        request_id=new_id(), client_email=ALICE, title="t",
        budget=common_pb2.Money(currency_code="EUR", units=1),
    )  # fmt: skip
    error, _ = await _invoke(services, BY_NAME["CreateTask"], request.SerializeToString(), "client")
    assert error is None
    with pytest.raises(AssertionError, match=r"changed tables .*'tasks': \(\(\d+"):
        await services.ledger.after("CreateTask told to change nothing", may_change=False)
    await services.ledger.rebase()


async def test_transitions_from_wrong_states_are_failed_precondition(
    services: Services, world: World
) -> None:
    cases: list[Case] = []
    for state in ("ACCEPTED", "WITHDRAWN", "REJECTED"):
        bid_id = await world.bid(state)
        cases += [
            Case(f"withdraw {state}", "WithdrawBid",
                 bids_pb2.WithdrawBidRequest(bid_id=bid_id, event_id=new_id()), "agent",
                 FP, "BID_NOT_PENDING"),
            Case(f"accept {state}", "AcceptBid",
                 bids_pb2.AcceptBidRequest(bid_id=bid_id, event_id=new_id(), client_email=ALICE,
                                           title="t"), "client", FP, "BID_NOT_PENDING"),
            Case(f"reject {state}", "RejectBid",
                 bids_pb2.RejectBidRequest(bid_id=bid_id, event_id=new_id()), "client",
                 FP, "BID_NOT_PENDING"),
        ]  # fmt: skip
    tasks = {state: await world.task(state) for state in ("PENDING", "PROCESSING", "COMPLETED",
                                                          "FAILED")}  # fmt: skip
    for state, (task_id, started_by) in tasks.items():
        if state != "PENDING":
            cases += [
                Case(f"start {state}", "StartTask",
                     bids_pb2.StartTaskRequest(task_id=task_id, execution_id=new_id(),
                                               event_id=new_id()), "service",
                     FP, "TASK_NOT_PENDING"),
                Case(f"submit on {state}", "SubmitExecution",
                     execution_pb2.SubmitExecutionRequest(request_id=new_id(), task_id=task_id),
                     "agent", FP, "TASK_NOT_PENDING"),
            ]  # fmt: skip
        if state != "PROCESSING":
            cases += [
                Case(f"complete {state}", "CompleteTask",
                     bids_pb2.CompleteTaskRequest(task_id=task_id, execution_id=started_by or
                                                  new_id(), event_id=new_id()), "service",
                     FP, "TASK_NOT_PROCESSING"),
                Case(f"fail {state}", "FailTask",
                     bids_pb2.FailTaskRequest(task_id=task_id, execution_id=started_by or new_id(),
                                              event_id=new_id(),
                                              error_type=common_pb2.ERROR_TYPE_TRANSIENT),
                     "service", FP, "TASK_NOT_PROCESSING"),
            ]  # fmt: skip
        if state != "COMPLETED":
            cases.append(
                Case(f"delivery token for {state}", "CreateDeliveryToken",
                     bids_pb2.CreateDeliveryTokenRequest(task_id=task_id), "client",
                     FP, "TASK_NOT_COMPLETED")
            )  # fmt: skip
    processing = tasks["PROCESSING"][0]
    execution_id, _ = await world.execution()
    pending_bid = await world.bid()
    cases += [
        Case("complete by another execution", "CompleteTask",
             bids_pb2.CompleteTaskRequest(task_id=processing, execution_id=new_id(),
                                          event_id=new_id(), result="x"), "service",
             FP, "EXECUTION_MISMATCH"),
        Case("fail by another execution", "FailTask",
             bids_pb2.FailTaskRequest(task_id=processing, execution_id=new_id(), event_id=new_id(),
                                      error_type=common_pb2.ERROR_TYPE_FATAL), "service",
             FP, "EXECUTION_MISMATCH"),
        Case("cancel a finished execution", "CancelExecution",
             execution_pb2.CancelExecutionRequest(execution_id=execution_id), "agent",
             FP, "EXECUTION_NOT_ACTIVE"),
        Case("second pending bid on a job", "PlaceBid",
             bids_pb2.PlaceBidRequest(request_id=new_id(), marketplace="upwork",
                                      job_id=world.job_of[pending_bid], agent_id="agent-1",
                                      amount=common_pb2.Money(currency_code="EUR", units=3)),
             "agent", grpc.StatusCode.ALREADY_EXISTS, "BID_ALREADY_ACTIVE"),
        Case("submit on an unknown task", "SubmitExecution",
             execution_pb2.SubmitExecutionRequest(request_id=new_id(), task_id=new_id()),
             "agent", NOT_FOUND, "TASK_NOT_FOUND"),
        Case("start an unknown task", "StartTask",
             bids_pb2.StartTaskRequest(task_id=new_id(), execution_id=new_id(),
                                       event_id=new_id()), "service", NOT_FOUND, "TASK_NOT_FOUND"),
        Case("withdraw an unknown bid", "WithdrawBid",
             bids_pb2.WithdrawBidRequest(bid_id=new_id(), event_id=new_id()), "agent",
             NOT_FOUND, "BID_NOT_FOUND"),
        Case("cancel an unknown execution", "CancelExecution",
             execution_pb2.CancelExecutionRequest(execution_id=new_id()), "agent",
             NOT_FOUND, "EXECUTION_NOT_FOUND"),
    ]  # fmt: skip
    await run_cases(services, cases)


def _money(units: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code="EUR", units=units)


async def test_reused_idempotency_keys_replay_or_are_refused(
    services: Services, world: World
) -> None:
    # The same key with the same request replays (OK, nothing changes); with
    # another request, another method or another caller it is INVALID_ARGUMENT
    # IDEMPOTENCY_KEY_REUSED naming the key, and nothing changes.
    create = bids_pb2.CreateTaskRequest(
        request_id=new_id(), client_email=ALICE, title="t", budget=_money(5)
    )
    await ok(services, "CreateTask", create, "client")
    place = bids_pb2.PlaceBidRequest(
        request_id=new_id(), marketplace="upwork", job_id="reuse-job", agent_id="agent-1",
        amount=_money(4),
    )  # fmt: skip
    await ok(services, "PlaceBid", place, "agent")
    bid_id = await world.bid()
    accept = bids_pb2.AcceptBidRequest(
        bid_id=bid_id, event_id=new_id(), client_email=ALICE, title="t"
    )
    await ok(services, "AcceptBid", accept, "client")
    other_bid = await world.bid()
    task_id, _ = await world.task()
    execution_id = new_id()
    start = bids_pb2.StartTaskRequest(task_id=task_id, execution_id=execution_id, event_id=new_id())
    await ok(services, "StartTask", start, "service")
    _, submit = await world.execution()

    def edit(message: Message, **changes: Any) -> Message:
        copy = type(message)()
        copy.CopyFrom(message)
        for name, value in changes.items():
            if isinstance(value, Message):
                getattr(copy, name).CopyFrom(value)
            else:
                setattr(copy, name, value)
        return copy

    loud = accept.event_id.upper()
    rid, eid = frozenset({"request_id"}), frozenset({"event_id"})
    cases = [
        Case("CreateTask repeat", "CreateTask", create, "client", OK, replay=True),
        Case("CreateTask upper-case key", "CreateTask",
             edit(create, request_id=create.request_id.upper()), "client", OK, replay=True),
        Case("CreateTask other title", "CreateTask", edit(create, title="u"), "client",
             INVALID, REUSED, rid),
        Case("CreateTask by admin", "CreateTask", create, "admin", INVALID, REUSED, rid),
        Case("PlaceBid repeat", "PlaceBid", place, "agent", OK, replay=True),
        Case("PlaceBid other amount", "PlaceBid", edit(place, amount=_money(5)), "agent",
             INVALID, REUSED, rid),
        Case("PlaceBid other job", "PlaceBid", edit(place, job_id="reuse-job-2"), "agent",
             INVALID, REUSED, rid),
        Case("AcceptBid repeat", "AcceptBid", accept, "client", OK, replay=True),
        Case("AcceptBid upper-case key", "AcceptBid", edit(accept, event_id=loud), "client",
             OK, replay=True),
        Case("AcceptBid other title", "AcceptBid", edit(accept, title="u"), "client",
             INVALID, REUSED, eid),
        Case("AcceptBid key on another bid", "AcceptBid", edit(accept, bid_id=other_bid),
             "client", INVALID, REUSED, eid),
        Case("AcceptBid key to withdraw", "WithdrawBid",
             bids_pb2.WithdrawBidRequest(bid_id=other_bid, event_id=accept.event_id), "agent",
             INVALID, REUSED, eid),
        Case("AcceptBid key to reject", "RejectBid",
             bids_pb2.RejectBidRequest(bid_id=bid_id, event_id=accept.event_id), "client",
             INVALID, REUSED, eid),
        Case("AcceptBid key to start a task", "StartTask",
             bids_pb2.StartTaskRequest(task_id=task_id, execution_id=execution_id,
                                       event_id=accept.event_id), "service",
             INVALID, REUSED, eid),
        Case("StartTask repeat", "StartTask", start, "service", OK, replay=True),
        Case("StartTask other execution", "StartTask", edit(start, execution_id=new_id()),
             "service", INVALID, REUSED, eid),
        Case("StartTask key to complete", "CompleteTask",
             bids_pb2.CompleteTaskRequest(task_id=task_id, execution_id=execution_id,
                                          event_id=start.event_id, result="r"), "service",
             INVALID, REUSED, eid),
        Case("StartTask key to fail", "FailTask",
             bids_pb2.FailTaskRequest(task_id=task_id, execution_id=execution_id,
                                      event_id=start.event_id,
                                      error_type=common_pb2.ERROR_TYPE_PERMANENT), "service",
             INVALID, REUSED, eid),
        Case("StartTask key to withdraw", "WithdrawBid",
             bids_pb2.WithdrawBidRequest(bid_id=other_bid, event_id=start.event_id), "agent",
             INVALID, REUSED, eid),
        Case("SubmitExecution repeat", "SubmitExecution", submit, "agent", OK, replay=True),
        Case("SubmitExecution other prompt", "SubmitExecution", edit(submit, prompt="p"),
             "agent", INVALID, REUSED, rid),
        Case("SubmitExecution other task", "SubmitExecution", edit(submit, task_id=task_id),
             "agent", INVALID, REUSED, rid),
        Case("SubmitExecution other budget", "SubmitExecution", edit(submit, max_attempts=2),
             "agent", INVALID, REUSED, rid),
    ]  # fmt: skip
    await run_cases(services, cases)


async def test_wrong_principals_are_refused_and_change_nothing(
    services: Services, world: World
) -> None:
    bid_id = await world.bid()
    task_id, _ = await world.task()
    processing, started_by = await world.task("PROCESSING")
    completed, _ = await world.task("COMPLETED")
    token = await world.delivery_token(completed)
    execution_id, submit = await world.execution()
    pending_for_submit, _ = await world.task()
    withdraw = bids_pb2.WithdrawBidRequest(bid_id=bid_id, event_id=new_id())
    accept = bids_pb2.AcceptBidRequest(
        bid_id=bid_id, event_id=new_id(), client_email=ALICE, title="t"
    )
    reject = bids_pb2.RejectBidRequest(bid_id=bid_id, event_id=new_id())
    start = bids_pb2.StartTaskRequest(task_id=task_id, execution_id=new_id(), event_id=new_id())
    complete = bids_pb2.CompleteTaskRequest(
        task_id=processing, execution_id=started_by, event_id=new_id(), result="r"
    )
    fail = bids_pb2.FailTaskRequest(
        task_id=processing, execution_id=started_by, event_id=new_id(),
        error_type=common_pb2.ERROR_TYPE_PERMANENT,
    )  # fmt: skip
    place = bids_pb2.PlaceBidRequest(
        request_id=new_id(), marketplace="upwork", job_id="principal-job", agent_id="agent-1",
        amount=_money(1),
    )  # fmt: skip
    create = bids_pb2.CreateTaskRequest(
        request_id=new_id(), client_email=ALICE, title="t", budget=_money(1)
    )
    delivery = bids_pb2.CreateDeliveryTokenRequest(task_id=completed)
    submit_new = execution_pb2.SubmitExecutionRequest(
        request_id=new_id(), task_id=pending_for_submit
    )
    cancel = execution_pb2.CancelExecutionRequest(execution_id=execution_id)
    complete_llm = execution_pb2.CompleteRequest(prompt="hi")
    denied: list[tuple[str, Message, list[str]]] = [
        ("WithdrawBid", withdraw, ["agent2", "client", "service"]),
        ("AcceptBid", accept, ["bob", "agent", "service"]),
        ("RejectBid", reject, ["agent", "service"]),
        ("PlaceBid", place, ["agent2", "client", "service"]),
        ("CreateTask", create, ["bob", "agent", "service"]),
        ("StartTask", start, ["client", "agent"]),
        ("CompleteTask", complete, ["client", "agent"]),
        ("FailTask", fail, ["client", "agent"]),
        ("CreateDeliveryToken", delivery, ["bob", "agent", "service"]),
        ("GetTask", bids_pb2.GetTaskRequest(task_id=task_id), ["bob", "agent"]),
        ("ListTasks", bids_pb2.ListTasksRequest(client_email=ALICE), ["bob", "agent"]),
        ("GetBid", bids_pb2.GetBidRequest(bid_id=bid_id), ["agent2", "service"]),
        ("ListBids", bids_pb2.ListBidsRequest(agent_id="agent-1"), ["agent2", "service"]),
        ("ListBidEvents", bids_pb2.ListBidEventsRequest(bid_id=bid_id), ["agent2"]),
        ("SubmitExecution", submit_new, ["client", "bob"]),
        ("CancelExecution", cancel, ["client"]),
        ("Complete", complete_llm, ["client"]),
    ]
    cases = [
        Case(f"{name} as {who}", name, request, who, DENIED)
        for name, request, callers in denied
        for who in callers
    ]
    cases += [
        Case(f"{name} as {who}", name, request, who, grpc.StatusCode.UNAUTHENTICATED)
        for name, request, _ in denied
        for who in ("anonymous", "forged")
    ]
    get_delivery = bids_pb2.GetDeliveryRequest(token=token)
    cases += [
        Case(f"GetDelivery as {who}", "GetDelivery", get_delivery, who, NOT_FOUND,
             "DELIVERY_NOT_FOUND")
        for who in ("bob", "agent", "service")
    ]  # fmt: skip
    cases.append(Case("GetDelivery as alice", "GetDelivery", get_delivery, "client", OK))
    cases.append(Case("SubmitExecution repeat as client", "SubmitExecution", submit, "client",
                      DENIED))  # fmt: skip
    await run_cases(services, cases)


async def test_mixed_valid_and_invalid_fields_name_every_bad_field(
    services: Services, world: World
) -> None:
    bid_id = await world.bid()
    pending, _ = await world.task()
    processing, started_by = await world.task("PROCESSING")
    completed, _ = await world.task("COMPLETED")
    ts = Timestamp
    cases = [
        Case("AcceptBid", "AcceptBid",
             bids_pb2.AcceptBidRequest(bid_id=bid_id, event_id="not-a-uuid", client_email="no-at",
                                       title=" ", description="ok"), "admin",
             INVALID, fields=frozenset({"event_id", "client_email", "title"})),
        Case("WithdrawBid", "WithdrawBid",
             bids_pb2.WithdrawBidRequest(bid_id=bid_id, event_id="", reason="a\x00b"), "agent",
             INVALID, fields=frozenset({"event_id", "reason"})),
        Case("RejectBid", "RejectBid",
             bids_pb2.RejectBidRequest(bid_id=bid_id, event_id=new_id(), reason="A" * 1_001),
             "client", INVALID, fields=frozenset({"reason"})),
        Case("StartTask", "StartTask",
             bids_pb2.StartTaskRequest(task_id=pending, execution_id="x", event_id=new_id()),
             "service", INVALID, fields=frozenset({"execution_id"})),
        Case("CompleteTask NUL", "CompleteTask",
             bids_pb2.CompleteTaskRequest(task_id=processing, execution_id=started_by,
                                          event_id="{x}", result="a\x00b"), "service",
             INVALID, fields=frozenset({"event_id", "result"})),
        Case("CompleteTask too long", "CompleteTask",
             bids_pb2.CompleteTaskRequest(task_id=processing, execution_id=started_by,
                                          event_id=new_id(), result="é" * 100_001), "service",
             INVALID, fields=frozenset({"result"})),
        Case("FailTask", "FailTask",
             bids_pb2.FailTaskRequest(task_id=processing, execution_id=started_by,
                                      event_id=new_id(), error_type=UNKNOWN_ENUM,
                                      message="A" * 10_001),
             "service", INVALID, fields=frozenset({"error_type", "message"})),
        Case("CreateDeliveryToken negative ttl", "CreateDeliveryToken",
             bids_pb2.CreateDeliveryTokenRequest(task_id=completed, ttl=Duration(seconds=-1)),
             "client", INVALID, fields=frozenset({"ttl"})),
        Case("CreateDeliveryToken long ttl, bad id", "CreateDeliveryToken",
             bids_pb2.CreateDeliveryTokenRequest(task_id=completed + "0",
                                                 ttl=Duration(seconds=86_400 * 31)),
             "client", INVALID, fields=frozenset({"task_id", "ttl"})),
        Case("CreateTask", "CreateTask",
             bids_pb2.CreateTaskRequest(request_id=new_id(), client_email="@", title="A" * 201,
                                        description="\x00",
                                        budget=common_pb2.Money(currency_code="eur")),
             "client", INVALID,
             fields=frozenset({"client_email", "title", "description", "budget"})),
        Case("PlaceBid", "PlaceBid",
             bids_pb2.PlaceBidRequest(request_id="x", marketplace=" upwork", job_id="",
                                      agent_id="agent-1",
                                      amount=common_pb2.Money(currency_code="EUR", units=1,
                                                              nanos=-1), proposal="ok"),
             "agent", INVALID,
             fields=frozenset({"request_id", "marketplace", "job_id", "amount"})),
        Case("SubmitExecution", "SubmitExecution",
             execution_pb2.SubmitExecutionRequest(request_id="x", task_id=pending,
                                                  output_schema="not json", max_attempts=11),
             "agent", INVALID,
             fields=frozenset({"request_id", "output_schema", "max_attempts"})),
        Case("ListTasks", "ListTasks",
             bids_pb2.ListTasksRequest(client_email="no-at", created_after=ts(seconds=2_000),
                                       created_before=ts(seconds=1_000), page_size=-1),
             "admin", INVALID,
             fields=frozenset({"client_email", "created_before", "page_size"})),
        Case("ListBidEvents", "ListBidEvents",
             bids_pb2.ListBidEventsRequest(bid_id=bid_id, page_size=-1, page_token="!!!"),
             "admin", INVALID, fields=frozenset({"page_size", "page_token"})),
        Case("ListExecutions", "ListExecutions",
             execution_pb2.ListExecutionsRequest(task_id="x", page_size=-1, page_token="!" * 1_001),
             "agent", INVALID, fields=frozenset({"task_id", "page_size", "page_token"})),
        Case("ListExecutions bad token", "ListExecutions",
             execution_pb2.ListExecutionsRequest(page_size=-1, page_token="!!!"), "agent",
             INVALID, fields=frozenset({"page_size", "page_token"})),
        Case("Complete", "Complete",
             execution_pb2.CompleteRequest(prompt="", output_schema="[]", max_attempts=-1),
             "agent", INVALID, fields=frozenset({"prompt", "output_schema", "max_attempts"})),
    ]  # fmt: skip
    await run_cases(services, cases)


Base = Callable[[World], Awaitable[tuple[Message, str]]]


async def _withdraw_base(world: World) -> tuple[Message, str]:
    bid_id = await world.bid()
    return bids_pb2.WithdrawBidRequest(bid_id=bid_id, event_id=new_id(), reason="r"), "agent"


async def _accept_base(world: World) -> tuple[Message, str]:
    request = bids_pb2.AcceptBidRequest(
        bid_id=await world.bid(), event_id=new_id(), client_email=ALICE, title="t", description="d"
    )
    return request, "client"


async def _reject_base(world: World) -> tuple[Message, str]:
    bid_id = await world.bid()
    return bids_pb2.RejectBidRequest(bid_id=bid_id, event_id=new_id(), reason="r"), "client"


async def _bid_events_base(world: World) -> tuple[Message, str]:
    return bids_pb2.ListBidEventsRequest(bid_id=await world.bid("WITHDRAWN")), "agent"


async def _get_bid_base(world: World) -> tuple[Message, str]:
    return bids_pb2.GetBidRequest(bid_id=await world.bid("ACCEPTED")), "agent"


async def _start_base(world: World) -> tuple[Message, str]:
    task_id, _ = await world.task()
    request = bids_pb2.StartTaskRequest(task_id=task_id, execution_id=new_id(), event_id=new_id())
    return request, "service"


async def _complete_base(world: World) -> tuple[Message, str]:
    task_id, execution_id = await world.task("PROCESSING")
    request = bids_pb2.CompleteTaskRequest(
        task_id=task_id, execution_id=execution_id, event_id=new_id(), result="r"
    )
    return request, "service"


async def _fail_base(world: World) -> tuple[Message, str]:
    task_id, execution_id = await world.task("PROCESSING")
    request = bids_pb2.FailTaskRequest(
        task_id=task_id, execution_id=execution_id, event_id=new_id(),
        error_type=common_pb2.ERROR_TYPE_TRANSIENT, message="m",
    )  # fmt: skip
    return request, "service"


async def _get_task_base(world: World) -> tuple[Message, str]:
    task_id, _ = await world.task("FAILED")
    return bids_pb2.GetTaskRequest(task_id=task_id), "client"


async def _token_base(world: World) -> tuple[Message, str]:
    task_id, _ = await world.task("COMPLETED")
    request = bids_pb2.CreateDeliveryTokenRequest(task_id=task_id, ttl=Duration(seconds=3_600))
    return request, "client"


async def _delivery_base(world: World) -> tuple[Message, str]:
    task_id, _ = await world.task("COMPLETED")
    return bids_pb2.GetDeliveryRequest(token=await world.delivery_token(task_id)), "client"


async def _submit_base(world: World) -> tuple[Message, str]:
    task_id, _ = await world.task()
    return execution_pb2.SubmitExecutionRequest(request_id=new_id(), task_id=task_id), "agent"


async def _execution_base(world: World) -> tuple[Message, str]:
    execution_id, _ = await world.execution()
    return execution_pb2.GetExecutionRequest(execution_id=execution_id), "agent"


async def _watch_base(world: World) -> tuple[Message, str]:
    execution_id, _ = await world.execution()
    return execution_pb2.WatchExecutionRequest(execution_id=execution_id), "client"


async def _cancel_base(world: World) -> tuple[Message, str]:
    execution_id, _ = await world.execution()
    return execution_pb2.CancelExecutionRequest(execution_id=execution_id), "agent"


async def _list_executions_base(world: World) -> tuple[Message, str]:
    _, submit = await world.execution()
    return execution_pb2.ListExecutionsRequest(task_id=submit.task_id, page_size=1), "service"


BASES: dict[str, Base] = {
    "WithdrawBid": _withdraw_base,
    "AcceptBid": _accept_base,
    "RejectBid": _reject_base,
    "ListBidEvents": _bid_events_base,
    "GetBid": _get_bid_base,
    "StartTask": _start_base,
    "CompleteTask": _complete_base,
    "FailTask": _fail_base,
    "GetTask": _get_task_base,
    "CreateDeliveryToken": _token_base,
    "GetDelivery": _delivery_base,
    "SubmitExecution": _submit_base,
    "GetExecution": _execution_base,
    "WatchExecution": _watch_base,
    "CancelExecution": _cancel_base,
    "ListExecutions": _list_executions_base,
}


def _id_variants(value: str) -> list[str]:
    """Spellings of a real id: some name the same object, the rest are not UUIDs."""
    return [value.upper(), "{" + value + "}", value.replace("-", ""), f"urn:uuid:{value}",
            f" {value}", f"{value}\n", f"{value}\x00", value[:-1], value + "0"]  # fmt: skip


def _swapped(base: Message, fd: FieldDescriptor, value: Any) -> Message:
    request = type(base)()
    request.CopyFrom(base)
    if value is None:
        request.ClearField(fd.name)
    elif isinstance(value, Message):
        getattr(request, fd.name).CopyFrom(value)
    else:
        setattr(request, fd.name, value)
    return request


def _real_edges(world: World, base: Message, fd: FieldDescriptor) -> list[Any]:
    values = _edge_values(fd)
    if fd.type == FieldDescriptor.TYPE_STRING and fd.name != "page_token":
        own = getattr(base, fd.name)
        # The latest ids of other objects, and event_ids already used.
        values = [*values, *_id_variants(own), *world.known_ids[-8:]] if own else values
    return values


@pytest.mark.parametrize("name", sorted(BASES))
async def test_field_edges_against_real_objects_answer_documented_codes(
    services: Services, world: World, name: str
) -> None:
    # A valid request on a real object in the right state, one field at a time
    # swapped for an edge value (other spellings of its id, ids of other
    # objects, the curated edges). Only documented codes; the ledger checks that
    # refused calls change nothing. An accepted change uses up the object: the
    # next request gets a fresh one.
    method = BY_NAME[name]
    base, caller = await BASES[name](world)
    for fd in method.input_type.fields:
        for value in _real_edges(world, base, fd):
            outcome = await rpc(services, name, _swapped(base, fd, value), caller)
            if outcome.code is OK and name in MUTATING:
                base, caller = await BASES[name](world)


async def test_extreme_amounts_survive_the_whole_bid_to_delivery_path(
    services: Services, world: World
) -> None:
    # The largest Money a request may carry (int64 units, 999,999,999 nanos) goes
    # through PlaceBid, AcceptBid (the task budget), the task transitions and the
    # delivery unchanged on both backends (BIGINT/INTEGER columns, no overflow).
    largest = common_pb2.Money(currency_code="EUR", units=INT64[1], nanos=999_999_999)
    place = bids_pb2.PlaceBidRequest(
        request_id=new_id(), marketplace="upwork", job_id="max-amount", agent_id="agent-1",
        amount=largest, proposal="😀" * 2_500,
    )  # fmt: skip
    bid = bids_pb2.PlaceBidResponse.FromString(await ok(services, "PlaceBid", place, "agent")).bid
    accept = bids_pb2.AcceptBidRequest(
        bid_id=bid.bid_id, event_id=new_id(), client_email=ALICE, title="é" * 200
    )
    reply = await ok(services, "AcceptBid", accept, "client")
    task_id = bids_pb2.AcceptBidResponse.FromString(reply).task.task_id
    execution_id = new_id()
    for name, request in [
        ("StartTask", bids_pb2.StartTaskRequest(
            task_id=task_id, execution_id=execution_id, event_id=new_id())),
        ("CompleteTask", bids_pb2.CompleteTaskRequest(
            task_id=task_id, execution_id=execution_id, event_id=new_id(),
            result="\U0010ffff" * 100_000)),
    ]:  # fmt: skip
        await ok(services, name, request, "service")
    token = await world.delivery_token(task_id)
    reply = await ok(services, "GetDelivery", bids_pb2.GetDeliveryRequest(token=token), "client")
    delivery = bids_pb2.GetDeliveryResponse.FromString(reply).delivery
    assert delivery.amount == largest
    assert delivery.result == "\U0010ffff" * 100_000


async def test_services_still_healthy_afterwards(services: Services) -> None:
    await assert_healthy(services)
    # Last in the module: every call above was made (per backend) by now.
    total = sum(services.codes.values())
    print(f"robustness: {total} calls by code {dict(services.codes)}; "
          f"{services.ledger.unchanged} checked to change nothing, "
          f"{services.ledger.digests} table digests")  # fmt: skip
