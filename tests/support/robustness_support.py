"""The robustness tests' harness: both services running, callers, and the checks.

Both services run in-process (port 0, bearer tokens for every principal in
:data:`PRINCIPALS`), the execution service wired to the real bids service, on
two SQLite files or two fresh PostgreSQL databases (:func:`databases`,
:func:`running_services`). Requests go out as raw bytes through a generic
channel with identity serializers (:func:`invoke`), so any body can be sent.

:func:`call` checks one call: it ends within its deadline with a code other
than INTERNAL, UNKNOWN or DATA_LOSS; every error carries exactly one
ErrorInfo, and INVALID_ARGUMENT a BadRequest with at least one field
violation; a call that fails, succeeds on a read-only method or replays an
idempotent one leaves every table of both databases as it was (the
:class:`~table_ledger.Ledger`). :func:`rpc` also requires a code the
contracts document.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import grpc
import grpc.aio
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc
from marketplace.bids.v1 import bids_pb2
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


# --- the services --------------------------------------------------------------------


@dataclass
class Services:
    """Channels to both running services, the ledger of their databases, and a
    count of the codes every checked call ended with."""

    channels: dict[str, grpc.aio.Channel]
    ledger: Ledger
    codes: Counter[str] = field(default_factory=Counter)

    def channel_for(self, method: MethodDescriptor) -> grpc.aio.Channel:
        return self.channels[method.containing_service.full_name]


def _token_entries() -> list[str]:
    return [f"{hash_token(raw)}={role}:{subject}" for raw, role, subject in PRINCIPALS.values()]


@asynccontextmanager
async def databases(server: str | None, base: Path) -> AsyncIterator[tuple[str, str]]:
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


@asynccontextmanager
async def running_services(bids_url: str, execution_url: str) -> AsyncIterator[Services]:
    """Both services migrated and serving on port 0, the ledger rebased; stopped after."""
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


async def invoke(
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


def status_details(exc: grpc.aio.AioRpcError) -> tuple[int, list[str]]:
    """(ErrorInfo count, BadRequest field paths) of a failed call."""
    outcome = _outcome(exc)
    return len(outcome.reasons), list(outcome.fields)


# Methods whose success may change the databases; every other call must not.
MUTATING = frozenset({
    "CreateTask", "PlaceBid", "WithdrawBid", "AcceptBid", "RejectBid", "StartTask",
    "CompleteTask", "FailTask", "CreateDeliveryToken", "SubmitExecution", "CancelExecution",
})  # fmt: skip
# Methods that count a call against the caller's quota once it is admitted (past
# authentication, permission and validation), whatever the run's outcome.
COUNTED = frozenset({"Complete"})
REFUSED_BEFORE_ADMISSION = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED,
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
    error, replies = await invoke(services, method, body, caller)
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
    counted = method.name in COUNTED and outcome.code not in REFUSED_BEFORE_ADMISSION
    await services.ledger.after(
        f"{where} ({outcome.code.name})",
        may_change=(ok and method.name in MUTATING and not replay) or counted,
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


# --- calls whose code the contracts document --------------------------------------------

BY_NAME = {m.name: m for m in METHODS}
ALICE = PRINCIPALS["client"][2]
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
