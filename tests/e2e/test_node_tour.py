"""examples/node/tour.mjs, run with ``node`` against both services as real processes.

The tour uses the TypeScript code generated into clients/ts and @grpc/grpc-js
(both from the repository's ``npm install``); the services run from their
console scripts on free ports with SQLite files and the offline provider.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from marketplace_common.auth import hash_token
from service_processes import Stack, clean_environment, running_stack
from tls_support import Pki, make_pki

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
TOUR = ROOT / "examples" / "node" / "tour.mjs"
TOUR_VARIABLES = (
    "MARKETPLACE_TOKEN",
    "MARKETPLACE_TLS_CA_FILE",
    "MARKETPLACE_TLS_CERT_FILE",
    "MARKETPLACE_TLS_KEY_FILE",
)
TOUR_TIMEOUT_S = 60.0
RESULT = "Offline answer to: Write a haiku About gRPC"
UUID = r"[0-9a-f-]{36}"
ADMIN_TOKEN = "tour-admin-" + "a" * 40
SERVICE_TOKEN = "tour-service-" + "s" * 40


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: examples/node needs Node.js (as buf does for make test)")
    if not (ROOT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("node_modules lacks @grpc/grpc-js: run `npm install` (make test does)")
    return node


def _command() -> list[str]:
    return [_node(), str(TOUR)]


def _environment(stack: Stack, **extra: str) -> dict[str, str]:
    return {
        **clean_environment(TOUR_VARIABLES),
        "BIDS_TARGET": stack.bids.target,
        "EXECUTION_TARGET": stack.execution.target,
        **extra,
    }


def _run_tour(stack: Stack, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(),
        cwd=ROOT,
        env=_environment(stack, **extra),
        capture_output=True,
        text=True,
        timeout=TOUR_TIMEOUT_S,
        check=False,
    )


def _task_of(output: str) -> str:
    found = re.search(rf"^3\. AcceptBid: bid BID_STATUS_ACCEPTED, task ({UUID}) ", output, re.M)
    assert found, output
    return found.group(1)


def _bids_task(stack: Stack, task_id: str, token: str | None = None) -> bids_pb2.Task:
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(stack.bids.target) as channel:
        reply = bids_pb2_grpc.BidServiceStub(channel).GetTask(
            bids_pb2.GetTaskRequest(task_id=task_id), metadata=metadata, timeout=10.0
        )
    return reply.task


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path, grace_s=5.0) as running:
        yield running


def test_tour_goes_from_a_bid_to_a_delivery_with_the_generated_code(stack: Stack) -> None:
    run = _run_tour(stack)

    out = run.stdout
    report = f"stdout:\n{out}\nstderr:\n{run.stderr}\n{stack.logs()}"
    assert run.returncode == 0, report
    assert out.rstrip().endswith("tour: OK"), report
    placed = re.search(rf"^1\. PlaceBid: bid ({UUID}) BID_STATUS_PENDING", out, re.M)
    assert placed, report
    # The replay with the same request_id answered the same bid.
    assert re.search(rf"replay of request_id {UUID}: the same bid {placed.group(1)}$", out, re.M)
    # ErrorInfo and BadRequest decoded from grpc-status-details-bin.
    assert "ErrorInfo: reason=BID_ALREADY_ACTIVE domain=bids.marketplace errorType=PERMANENT" in out
    assert "ErrorInfo: reason=INVALID_ARGUMENT domain=bids.marketplace errorType=PERMANENT" in out
    assert "BadRequest: request_id: must be a UUID" in out
    assert "BadRequest: amount.currency_code: must be an upper-case ISO 4217 currency code" in out
    assert "BadRequest: amount.nanos: units and nanos must have the same sign" in out
    assert "   watch: EXECUTION_STATUS_SUCCEEDED" in out
    task_id = _task_of(out)
    assert f'GetDelivery: task {task_id} for alice@example.com: "{RESULT}"' in out
    # What the tour printed is what the services hold.
    task = _bids_task(stack, task_id)
    assert (task.status, task.result, task.bid_id) == (
        bids_pb2.TASK_STATUS_COMPLETED,
        RESULT,
        placed.group(1),
    )


@pytest.fixture
def stack_with_tokens(tmp_path: Path) -> Iterator[Stack]:
    admin = f"{hash_token(ADMIN_TOKEN)}=admin:tour"
    service = f"{hash_token(SERVICE_TOKEN)}=service:execution"
    with running_stack(
        tmp_path,
        grace_s=5.0,
        bids_settings={"BIDS_AUTH_TOKENS": f"{admin},{service}"},
        execution_settings={"EXECUTION_AUTH_TOKENS": admin, "EXECUTION_BIDS_TOKEN": SERVICE_TOKEN},
    ) as running:
        yield running


def test_tour_sends_the_token_of_marketplace_token_as_a_bearer(stack_with_tokens: Stack) -> None:
    stack = stack_with_tokens
    refused = _run_tour(stack)
    assert refused.returncode == 1, refused.stdout
    assert "tour: FAILED: UNAUTHENTICATED" in refused.stderr, refused.stderr

    run = _run_tour(stack, MARKETPLACE_TOKEN=ADMIN_TOKEN)

    report = f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}\n{stack.logs()}"
    assert run.returncode == 0, report
    assert "with the bearer token from MARKETPLACE_TOKEN" in run.stdout
    assert run.stdout.rstrip().endswith("tour: OK"), report
    task = _bids_task(stack, _task_of(run.stdout), ADMIN_TOKEN)
    assert task.status == bids_pb2.TASK_STATUS_COMPLETED


@pytest.fixture
def slow_stack(tmp_path: Path) -> Iterator[Stack]:
    """Executions take 3 s (the offline provider's latency), within a 10 s grace period."""
    with running_stack(
        tmp_path,
        grace_s=10.0,
        execution_settings={"EXECUTION_LLM_OFFLINE_LATENCY_SECONDS": "3"},
    ) as running:
        yield running


def test_tour_watches_again_after_the_retry_info_delay_when_the_service_restarts(
    slow_stack: Stack,
) -> None:
    stack = slow_stack
    tour = subprocess.Popen(
        _command(),
        cwd=ROOT,
        env=_environment(stack),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tour.stdout is not None
        seen: list[str] = []
        while not (seen and seen[-1].startswith("   watch: ")):
            line = tour.stdout.readline()
            assert line, f"the tour ended before watching:\n{''.join(seen)}"
            seen.append(line)
        # A rolling restart: the open watch ends with UNAVAILABLE and RetryInfo.
        stack.restart_execution(wait=15.0)
        rest, errors = tour.communicate(timeout=TOUR_TIMEOUT_S)
    finally:
        if tour.poll() is None:
            tour.kill()
            tour.wait()

    out = "".join(seen) + rest
    report = f"stdout:\n{out}\nstderr:\n{errors}\n{stack.logs()}"
    assert tour.returncode == 0, report
    retry = "retry: WatchExecution got UNAVAILABLE; waiting 1000 ms (RetryInfo)"
    assert retry in out, report
    after_retry = out[out.index(retry) :]
    assert "   watch: EXECUTION_STATUS_SUCCEEDED" in after_retry, report
    assert out.rstrip().endswith("tour: OK"), report
    task = _bids_task(stack, _task_of(out))
    assert (task.status, task.result) == (bids_pb2.TASK_STATUS_COMPLETED, RESULT)


@pytest.fixture
def tls_stack(tmp_path: Path) -> Iterator[tuple[Stack, Pki]]:
    """Both services serve TLS; the execution service trusts the CA for its calls to bids."""
    pki = make_pki(tmp_path)
    server = {"TLS_CERT_FILE": str(pki.server.cert), "TLS_KEY_FILE": str(pki.server.key)}
    with running_stack(
        tmp_path,
        grace_s=5.0,
        bids_settings={f"BIDS_{k}": v for k, v in server.items()},
        execution_settings={
            **{f"EXECUTION_{k}": v for k, v in server.items()},
            "EXECUTION_BIDS_TLS_CA_FILE": str(pki.ca),
        },
        root_certificates=pki.ca_pem,
    ) as running:
        yield running, pki


def test_tour_connects_with_tls_when_given_a_trust_root(tls_stack: tuple[Stack, Pki]) -> None:
    stack, pki = tls_stack

    run = _run_tour(stack, MARKETPLACE_TLS_CA_FILE=str(pki.ca))

    report = f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}\n{stack.logs()}"
    assert run.returncode == 0, report
    assert f"execution at {stack.execution.target}, TLS, without a token" in run.stdout
    assert run.stdout.rstrip().endswith("tour: OK"), report
    assert f'for alice@example.com: "{RESULT}"' in run.stdout
