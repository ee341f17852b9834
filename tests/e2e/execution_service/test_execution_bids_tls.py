"""The execution -> bids link over TLS and mutual TLS, with the real bids service and
certificates made in the test (trustme): a submitted execution reaches bids and
completes its task; a client certificate can stand for the service principal; a
misconfigured link fails with UNAVAILABLE, never INTERNAL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from bids_support import PRINCIPALS, Caller, accept_request, migrate, place_bid_request
from bids_support import start as start_bids
from marketplace.bids.v1 import bids_pb2
from marketplace.execution.v1 import execution_pb2 as pb
from marketplace.execution.v1 import execution_pb2_grpc
from marketplace_bids.server import BidsServer
from marketplace_common.client import ClientTls, create_channel
from marketplace_common.migrations import upgrade_async
from marketplace_execution.migrations import MIGRATIONS_DIR
from marketplace_execution.server import create_server
from marketplace_execution.settings import ExecutionSettings
from tls_support import CLIENT_NAME, Pki, make_pki

SERVICE_TOKEN = PRINCIPALS["service"][0]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


BidsFactory = Callable[..., Awaitable[BidsServer]]


@pytest.fixture
async def bids(tmp_path: Path) -> AsyncIterator[BidsFactory]:
    """Starts the real bids service (SQLite, the test tokens) with the given settings."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'bids.db'}"
    await migrate(url)
    started: list[BidsServer] = []

    async def start(**overrides: Any) -> BidsServer:
        server = await start_bids(url, **overrides)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop(0)


async def execution_stub(
    tmp_path: Path, stack: list[Any], **settings: Any
) -> execution_pb2_grpc.ExecutionServiceStub:
    """The execution service on loopback (no tokens: the caller is the local admin)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'execution.db'}"
    await upgrade_async(url, MIGRATIONS_DIR)
    values: dict[str, Any] = {
        "grpc_port": 0,
        "metrics_port": 0,
        "database_url": url,
        "poll_seconds": 0.1,
        "watch_poll_seconds": 0.2,
        "shutdown_grace_seconds": 0.5,
        **settings,
    }
    server, port = await create_server(ExecutionSettings(**values))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stack += [channel, server]
    return execution_pb2_grpc.ExecutionServiceStub(channel)


@pytest.fixture
async def stack() -> AsyncIterator[list[Any]]:
    """Channels and servers to close at the end."""
    items: list[Any] = []
    yield items
    for item in reversed(items):
        await (item.close(None) if isinstance(item, grpc.aio.Channel) else item.stop(0))


async def accepted_task(channel: grpc.aio.Channel) -> str:
    """A task made the way the marketplace makes them: an agent bids, alice accepts."""
    bid = (await Caller(channel, "agent").PlaceBid(place_bid_request(job_id=str(uuid.uuid4())))).bid
    accepted = await Caller(channel, "alice").AcceptBid(accept_request(bid.bid_id))
    return str(accepted.task.task_id)


async def run_to_the_end(stub: Any, task_id: str) -> pb.Execution:
    submitted = await stub.SubmitExecution(
        pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=task_id), timeout=20
    )
    stream = stub.WatchExecution(
        pb.WatchExecutionRequest(execution_id=submitted.execution.execution_id), timeout=30
    )
    events = [response.event async for response in stream]
    final: pb.Execution = events[-1].execution
    return final


async def bids_task(channel: grpc.aio.Channel, task_id: str) -> bids_pb2.Task:
    task: bids_pb2.Task = (
        await Caller(channel, "alice").GetTask(bids_pb2.GetTaskRequest(task_id=task_id))
    ).task
    return task


def tls_bids(pki: Pki, **more: Any) -> dict[str, Any]:
    return {"tls_cert_file": pki.server.cert, "tls_key_file": pki.server.key, **more}


async def test_over_tls_a_submit_reaches_bids_and_completes_the_task(
    bids: BidsFactory, pki: Pki, tmp_path: Path, stack: list[Any]
) -> None:
    server = await bids(**tls_bids(pki))
    target = f"localhost:{server.port}"
    stub = await execution_stub(
        tmp_path, stack, bids_target=target, bids_token=SERVICE_TOKEN, bids_tls_ca_file=pki.ca
    )
    async with create_channel(target, tls=ClientTls(pki.ca_pem)) as channel:
        task_id = await accepted_task(channel)
        final = await run_to_the_end(stub, task_id)
        assert final.status == pb.EXECUTION_STATUS_SUCCEEDED
        task = await bids_task(channel, task_id)
    assert task.status == bids_pb2.TASK_STATUS_COMPLETED
    assert task.execution_id == final.execution_id
    assert task.result == final.result


async def test_over_mtls_the_client_certificate_is_the_service_principal_without_a_token(
    bids: BidsFactory, pki: Pki, tmp_path: Path, stack: list[Any]
) -> None:
    server = await bids(
        **tls_bids(
            pki,
            tls_client_ca_file=pki.ca,
            auth_cert_principals=[f"{CLIENT_NAME}=service:execution"],
        )
    )
    target = f"localhost:{server.port}"
    stub = await execution_stub(
        tmp_path,
        stack,
        bids_target=target,
        bids_tls_ca_file=pki.ca,
        bids_tls_cert_file=pki.client.cert,
        bids_tls_key_file=pki.client.key,
    )
    # The test's own callers present an unmapped certificate and their bearer tokens.
    their_tls = ClientTls.from_files(pki.ca, pki.stranger.cert, pki.stranger.key)
    async with create_channel(target, tls=their_tls) as channel:
        task_id = await accepted_task(channel)
        final = await run_to_the_end(stub, task_id)
        assert final.status == pb.EXECUTION_STATUS_SUCCEEDED
        task = await bids_task(channel, task_id)
    assert task.status == bids_pb2.TASK_STATUS_COMPLETED
    assert task.execution_id == final.execution_id


async def submit_error(stub: Any, task_id: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.SubmitExecution(
            pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=task_id), timeout=20
        )
    return info.value


@pytest.mark.parametrize(
    ("bids_tls_files", "link"),
    [
        (False, {}),  # plaintext execution, TLS bids
        (False, {"bids_tls": True}),  # TLS with the system's roots: bids' CA is not one
        (True, {"with_ca": True}),  # TLS, but no client certificate for an mTLS bids
    ],
    ids=["plaintext", "untrusted-server", "no-client-certificate"],
)
async def test_a_misconfigured_link_answers_unavailable_never_internal(
    bids: BidsFactory,
    pki: Pki,
    tmp_path: Path,
    stack: list[Any],
    bids_tls_files: bool,
    link: dict[str, Any],
) -> None:
    server = await bids(
        **tls_bids(pki, **({"tls_client_ca_file": pki.ca} if bids_tls_files else {}))
    )
    target = f"localhost:{server.port}"
    if link.pop("with_ca", False):
        link["bids_tls_ca_file"] = pki.ca
    stub = await execution_stub(
        tmp_path,
        stack,
        bids_target=target,
        bids_token=SERVICE_TOKEN,
        bids_timeout_seconds=3.0,
        **link,
    )
    their_tls = ClientTls.from_files(pki.ca, pki.stranger.cert, pki.stranger.key)
    async with create_channel(target, tls=their_tls) as channel:
        task_id = await accepted_task(channel)
        err = await submit_error(stub, task_id)
        task = await bids_task(channel, task_id)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert task.status == bids_pb2.TASK_STATUS_PENDING
