"""Load balancing of the execution -> bids link: one target whose name resolves to two
bids instances (as a Kubernetes headless Service resolves to its pods), and the
round_robin policy sends the execution service's calls to both.

The name is served by the test's own DNS server (``dns://<server>/<name>:<port>``
is the same resolver as ``dns:///<name>:<port>``, asked at a given address); the two
instances share one PostgreSQL database, like replicas, and listen on 127.0.0.1 and
127.0.0.2 with the same port.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from bids_support import PRINCIPALS, Caller, accept_request, migrate, place_bid_request
from bids_support import start as start_bids
from dns_support import dns_server
from grpc_health.v1 import health_pb2, health_pb2_grpc
from marketplace.execution.v1 import execution_pb2 as pb
from marketplace.execution.v1 import execution_pb2_grpc
from marketplace_bids.server import BidsServer
from marketplace_common.client import create_channel
from marketplace_common.migrations import upgrade_async
from marketplace_execution.migrations import MIGRATIONS_DIR
from marketplace_execution.server import create_server
from marketplace_execution.settings import ExecutionSettings

HOSTS = ("127.0.0.1", "127.0.0.2")
NAME = "bids.test"
EXECUTION_RPCS = ("GetTask", "StartTask", "CompleteTask")
RUNS = 6


def port_free_on_both() -> int:
    """A port free right now on both loopback addresses."""
    for _ in range(20):
        with socket.socket() as first, socket.socket() as second:
            first.bind((HOSTS[0], 0))
            port = int(first.getsockname()[1])
            try:
                second.bind((HOSTS[1], port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free on both loopback addresses")


@pytest.fixture
async def two_bids(pg_url: str) -> AsyncIterator[tuple[list[BidsServer], int]]:
    """Two bids instances on one database, one port, two addresses."""
    await migrate(pg_url)
    servers: list[BidsServer] = []
    for attempt in range(5):
        port = port_free_on_both()
        try:
            for host in HOSTS:
                servers.append(await start_bids(pg_url, grpc_host=host, grpc_port=port))
            break
        except OSError:
            for server in servers:
                await server.stop(0)
            servers.clear()
            if attempt == 4:
                raise
    yield servers, port
    for server in servers:
        await server.stop(0)


def execution_calls(server: BidsServer) -> int:
    """How many of the execution service's RPCs this bids instance has served."""
    total = 0.0
    for family in server.grpc.metrics.registry.collect():
        for sample in family.samples:
            if (
                sample.name == "grpc_server_started_total"
                and sample.labels.get("grpc_method") in EXECUTION_RPCS
            ):
                total += sample.value
    return int(total)


async def accepted_task(channel: grpc.aio.Channel) -> str:
    bid = (await Caller(channel, "agent").PlaceBid(place_bid_request(job_id=str(uuid.uuid4())))).bid
    accepted = await Caller(channel, "alice").AcceptBid(accept_request(bid.bid_id))
    return str(accepted.task.task_id)


async def run_executions(tmp_path: Path, target: str, port: int, **settings: Any) -> None:
    """RUNS tasks made on the first instance, each executed to the end through ``target``."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'execution.db'}"
    await upgrade_async(url, MIGRATIONS_DIR)
    execution, execution_port = await create_server(
        ExecutionSettings(
            grpc_port=0,
            metrics_port=0,
            database_url=url,
            bids_target=target,
            bids_token=PRINCIPALS["service"][0],
            poll_seconds=0.1,
            watch_poll_seconds=0.2,
            **settings,
        )
    )
    try:
        async with (
            grpc.aio.insecure_channel(f"{HOSTS[0]}:{port}") as bids_channel,
            grpc.aio.insecure_channel(f"127.0.0.1:{execution_port}") as channel,
        ):
            stub = execution_pb2_grpc.ExecutionServiceStub(channel)
            for _ in range(RUNS):
                task_id = await accepted_task(bids_channel)
                submitted = await stub.SubmitExecution(
                    pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=task_id),
                    timeout=20,
                )
                stream = stub.WatchExecution(
                    pb.WatchExecutionRequest(execution_id=submitted.execution.execution_id),
                    timeout=30,
                )
                final = [r.event async for r in stream][-1].execution
                assert final.status == pb.EXECUTION_STATUS_SUCCEEDED
    finally:
        await execution.stop(0.5)


async def test_round_robin_sends_calls_to_both_instances_behind_one_name(
    two_bids: tuple[list[BidsServer], int], tmp_path: Path
) -> None:
    servers, port = two_bids
    with dns_server({NAME: HOSTS}) as dns_port:
        await run_executions(tmp_path, f"dns://127.0.0.1:{dns_port}/{NAME}:{port}", port)
    calls = [execution_calls(server) for server in servers]
    assert sum(calls) == RUNS * len(EXECUTION_RPCS)
    assert all(n > 0 for n in calls), calls


async def test_pick_first_pins_every_call_to_one_instance(
    two_bids: tuple[list[BidsServer], int], tmp_path: Path
) -> None:
    servers, port = two_bids
    with dns_server({NAME: HOSTS}) as dns_port:
        await run_executions(
            tmp_path,
            f"dns://127.0.0.1:{dns_port}/{NAME}:{port}",
            port,
            bids_load_balancing="pick_first",
        )
    calls = sorted(execution_calls(server) for server in servers)
    assert calls == [0, RUNS * len(EXECUTION_RPCS)]


async def test_a_dns_target_with_the_system_resolver_reaches_the_server(
    two_bids: tuple[list[BidsServer], int],
) -> None:
    _, port = two_bids
    async with create_channel(f"dns:///localhost:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
