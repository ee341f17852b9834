"""docs/walkthrough.md (scripts/walkthrough.sh) against both services as real processes.

Both services run from their console scripts (``serve --migrate``) on free
loopback ports with SQLite files in ``tmp_path``; the script drives them with
grpcurl from a bid to a delivery; then SIGTERM stops both cleanly.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_processes import BIN, Stack, clean_environment, running_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "walkthrough.sh"
GRACE_S = 5.0
SCRIPT_TIMEOUT_S = 30.0
SCRIPT_VARIABLES = ("GRPCURL", "PYTHON", "BIDS", "EXECUTION", "JSON_TOOL")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """Both services serving on free ports, each with its own SQLite file."""
    with running_stack(tmp_path, grace_s=GRACE_S) as running:
        yield running


def _run_walkthrough(stack: Stack, json_tool: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={
            **clean_environment(SCRIPT_VARIABLES),
            "GRPCURL": str(BIN / "grpcurl"),
            "PYTHON": sys.executable,
            "BIDS": stack.bids.target,
            "EXECUTION": stack.execution.target,
            "JSON_TOOL": json_tool,
        },
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        check=False,
    )


def test_walkthrough_goes_from_bid_to_delivery_then_services_stop_on_sigterm(stack: Stack) -> None:
    run = _run_walkthrough(stack, "auto")

    report = f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}\n{stack.logs()}"
    assert run.returncode == 0, report
    assert "walkthrough: OK" in run.stdout, report
    # The expected errors, with details grpcurl decoded through reflection.
    assert '"@type":"type.googleapis.com/google.rpc.BadRequest"' in run.stdout
    assert '"reason":"BID_ALREADY_ACTIVE"' in run.stdout
    assert '"reason":"DELIVERY_NOT_FOUND"' in run.stdout
    # The delivery carries the result the execution produced for the accepted bid's task.
    assert "ok: task.status = TASK_STATUS_COMPLETED" in run.stdout
    assert "ok: delivery.result = Offline answer to: Write a haiku About gRPC" in run.stdout

    execution_code, execution_seconds = stack.execution.terminate(GRACE_S + 5.0)
    bids_code, bids_seconds = stack.bids.terminate(GRACE_S + 5.0)
    assert (execution_code, bids_code) == (0, 0), stack.logs()
    assert max(execution_seconds, bids_seconds) < GRACE_S, (execution_seconds, bids_seconds)


def test_walkthrough_parses_json_with_python_when_jq_is_not_used(stack: Stack) -> None:
    run = _run_walkthrough(stack, "python")

    report = f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}\n{stack.logs()}"
    assert run.returncode == 0, report
    assert "JSON parsed with python" in run.stdout
    assert "ok: delivery.result = Offline answer to: Write a haiku About gRPC" in run.stdout
