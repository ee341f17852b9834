"""marketctl against both services as real processes: the walkthrough, --json, errors, exit codes.

The services run from their console scripts on free loopback ports (SQLite,
offline LLM); marketctl runs as a subprocess, as a person or a script runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bids_support import PRINCIPALS, token_entries
from service_processes import BIN, Stack, clean_environment, free_port, running_stack
from tls_support import make_pki

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
MARKETCTL = BIN / "marketctl"
SCRIPT = ROOT / "scripts" / "walkthrough_marketctl.sh"
CLI_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("marketctl"), grace_s=2.0) as running:
        yield running


def marketctl(stack: Stack | None, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    targets = {}
    if stack is not None:
        targets = {
            "MARKETCTL_BIDS": stack.bids.target,
            "MARKETCTL_EXECUTION": stack.execution.target,
        }
    return subprocess.run(
        [str(MARKETCTL), *args],
        env={**clean_environment(("MARKETCTL_TOKEN",)), **targets, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def ok_json(stack: Stack, *args: str) -> Any:
    run = marketctl(stack, "--json", *args)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def place(stack: Stack, job: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return marketctl(
        stack, "--json", "bids", "place", "--marketplace", "upwork", "--job-id", job,
        "--agent-id", "agent-7", "--amount", "12.50", "--currency", "USD",
        "--proposal", "a haiku", *extra,
    )  # fmt: skip


def test_the_walkthrough_runs_with_marketctl(stack: Stack) -> None:
    run = subprocess.run(
        ["bash", str(SCRIPT)],
        env={
            **clean_environment(("MARKETCTL_TOKEN",)),
            "MARKETCTL": str(MARKETCTL),
            "PYTHON": sys.executable,
            "MARKETCTL_BIDS": stack.bids.target,
            "MARKETCTL_EXECUTION": stack.execution.target,
            "COLUMNS": "200",
        },
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    report = f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}\n{stack.logs()}"
    assert run.returncode == 0, report
    assert "walkthrough: OK" in run.stdout, report
    assert "ok: task.status = TASK_STATUS_COMPLETED" in run.stdout
    assert "ok: delivery.result = Offline answer to: Write a haiku About gRPC" in run.stdout
    # The live watch drew the attempts table; the task's trail shows both transitions.
    assert "attempts" in run.stdout
    assert "PROCESSING" in run.stdout
    assert "COMPLETED" in run.stdout


def test_json_is_the_proto_json_and_the_generated_id_makes_a_retry_safe(stack: Stack) -> None:
    first = place(stack, "job-json")
    assert first.returncode == 0, first.stderr
    bid = json.loads(first.stdout)["bid"]
    assert bid["amount"] == {"currency_code": "USD", "units": "12", "nanos": 500000000}
    assert bid["status"] == "BID_STATUS_PENDING"
    # The generated request_id is printed on stderr, never in the JSON.
    (line,) = [x for x in first.stderr.splitlines() if x.startswith("request_id: ")]
    request_id = line.split()[1]
    again = place(stack, "job-json", "--request-id", request_id)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["bid"]["bid_id"] == bid["bid_id"]
    assert "request_id:" not in again.stderr
    got = ok_json(stack, "bids", "get", bid["bid_id"])
    assert got["bid"]["bid_id"] == bid["bid_id"]


def test_bad_input_names_every_field_and_exits_3(stack: Stack) -> None:
    run = marketctl(
        stack, "tasks", "events", "not-a-uuid", "--page-size", "-1", "--page-token", "!!!"
    )
    assert run.returncode == 3, run.stderr
    assert "error: INVALID_ARGUMENT" in run.stderr
    assert "reason: INVALID_ARGUMENT" in run.stderr
    for name in ("task_id", "page_size", "page_token"):
        assert f"field {name}:" in run.stderr
    assert run.stdout == ""


def test_each_kind_of_failure_has_its_exit_code(stack: Stack) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    not_found = marketctl(stack, "tasks", "get", unknown)
    assert (not_found.returncode, "reason: TASK_NOT_FOUND" in not_found.stderr) == (4, True)

    assert place(stack, "job-dup").returncode == 0
    conflict = place(stack, "job-dup")
    assert conflict.returncode == 5, conflict.stderr
    assert "BID_ALREADY_ACTIVE" in conflict.stderr

    # --json: the error is one JSON object on stderr, stdout stays empty.
    as_json = marketctl(stack, "--json", "bids", "get", unknown)
    assert as_json.returncode == 4
    assert as_json.stdout == ""
    error = json.loads(as_json.stderr)
    assert (error["code"], error["reason"]) == ("NOT_FOUND", "BID_NOT_FOUND")

    nobody = f"127.0.0.1:{free_port()}"
    down = marketctl(None, "--bids", nobody, "--timeout", "3", "bids", "get", unknown)
    assert down.returncode == 6, down.stderr
    assert "UNAVAILABLE" in down.stderr or "DEADLINE_EXCEEDED" in down.stderr

    usage = marketctl(stack, "bids", "place", "--marketplace", "m", "--job-id", "j",
                      "--agent-id", "a", "--amount", "twelve", "--currency", "USD")  # fmt: skip
    assert usage.returncode == 2
    assert "not a decimal amount" in usage.stderr


def test_a_refused_token_exits_7(tmp_path: Path) -> None:
    secured = {"BIDS_AUTH_TOKENS": ",".join(token_entries())}
    with running_stack(tmp_path, grace_s=2.0, bids_settings=secured) as stack:
        unknown = "00000000-0000-4000-8000-000000000000"
        wrong = marketctl(stack, "--token", "not-a-token-" + "x" * 40, "tasks", "get", unknown)
        assert wrong.returncode == 7, wrong.stderr
        assert "UNAUTHENTICATED" in wrong.stderr
        # An agent may not create a task: PERMISSION_DENIED, also 7.
        agent_token = PRINCIPALS["agent"][0]
        denied = marketctl(
            stack, "tasks", "create", "--client-email", "alice@example.com", "--title", "t",
            "--budget", "5", "--currency", "EUR", MARKETCTL_TOKEN=agent_token,
        )  # fmt: skip
        assert denied.returncode == 7, denied.stderr
        assert "PERMISSION_DENIED" in denied.stderr
        alice = PRINCIPALS["alice"][0]
        created = marketctl(
            stack, "--json", "tasks", "create", "--client-email", "alice@example.com",
            "--title", "t", "--budget", "5", "--currency", "EUR", MARKETCTL_TOKEN=alice,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout)["task"]["client_email"] == "alice@example.com"


def test_watch_json_streams_events_until_the_end(stack: Stack) -> None:
    task = ok_json(
        stack, "tasks", "create", "--client-email", "alice@example.com", "--title", "t",
        "--budget", "5", "--currency", "EUR",
    )["task"]  # fmt: skip
    execution = ok_json(stack, "executions", "submit", "--task-id", task["task_id"],
                        "--prompt", "hi")["execution"]  # fmt: skip
    run = marketctl(stack, "--json", "executions", "watch", execution["execution_id"])
    assert run.returncode == 0, run.stderr
    events = [json.loads(line)["event"] for line in run.stdout.splitlines()]
    assert events[-1]["execution"]["status"] == "EXECUTION_STATUS_SUCCEEDED"
    # The offline provider answers at once: the watch may start after the end, and the
    # first event (the current state) then already holds the attempt.
    assert len(events[-1]["execution"]["attempts"]) >= 1
    listed = ok_json(stack, "executions", "list", "--task-id", task["task_id"])
    assert [e["execution_id"] for e in listed["executions"]] == [execution["execution_id"]]
    trail = ok_json(stack, "tasks", "events", task["task_id"])["events"]
    assert [e["new_status"] for e in trail] == ["TASK_STATUS_PROCESSING", "TASK_STATUS_COMPLETED"]


def test_tls_options(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    server = {
        "BIDS_TLS_CERT_FILE": str(pki.server.cert),
        "BIDS_TLS_KEY_FILE": str(pki.server.key),
    }
    execution = {
        "EXECUTION_TLS_CERT_FILE": str(pki.server.cert),
        "EXECUTION_TLS_KEY_FILE": str(pki.server.key),
        "EXECUTION_BIDS_TLS_CA_FILE": str(pki.ca),
    }
    with running_stack(
        tmp_path,
        grace_s=2.0,
        bids_settings=server,
        execution_settings=execution,
        root_certificates=pki.ca_pem,
    ) as stack:
        unknown = "00000000-0000-4000-8000-000000000000"
        mutual = (
            "--ca-file", str(pki.ca),
            "--cert-file", str(pki.client.cert), "--key-file", str(pki.client.key),
        )  # fmt: skip
        # Trusting the CA (and presenting a client certificate): the call reaches bids.
        found = marketctl(stack, *mutual, "bids", "get", unknown)
        assert found.returncode == 4, found.stderr
        assert "BID_NOT_FOUND" in found.stderr
        # The same from the environment, and the execution service over TLS too.
        env = {
            "MARKETCTL_TLS_CA_FILE": str(pki.ca),
            "MARKETCTL_TLS_CERT_FILE": str(pki.client.cert),
            "MARKETCTL_TLS_KEY_FILE": str(pki.client.key),
        }
        listed = marketctl(stack, "--json", "executions", "list", **env)
        assert listed.returncode == 0, listed.stderr
        # Trusting another CA fails the handshake: unavailable; plaintext to a TLS port too.
        for args in (("--ca-file", str(pki.other_ca)), ()):
            refused = marketctl(stack, "--timeout", "5", *args, "bids", "get", unknown)
            assert refused.returncode == 6, refused.stderr
        # A certificate without its key is a usage error; nothing is sent.
        half = marketctl(stack, "--cert-file", str(pki.client.cert), "bids", "get", unknown)
        assert half.returncode == 2
        assert "--cert-file and --key-file go together" in half.stderr
