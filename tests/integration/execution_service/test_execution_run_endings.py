"""Every run ends, and its task with it: crashes, unstorable answers and refused reports.

Before these fixes each case left the execution RUNNING (or SUCCEEDED) with its
task PROCESSING: an unexpected exception kept the lease until it lapsed, then the
next claimer called the LLM again, every lease period, forever.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from execution_support import S, final_state, openai_settings, submit
from marketplace.bids.v1 import bids_pb2
from marketplace.common.v1 import common_pb2
from marketplace_execution.domain.models import AttemptView
from marketplace_execution.domain.ports import AttemptCallback, JobResult, JobSpec

RECURSIVE_SCHEMA = json.dumps({"type": "array", "items": {"$ref": "#"}})
DEEP_ANSWER = "[" * 300 + "]" * 300


class CrashingRunner:
    """A JobRunner with a bug: every run raises."""

    def __init__(self) -> None:
        self.runs = 0

    async def run(
        self,
        job: JobSpec,
        *,
        previous: Sequence[AttemptView] = (),
        on_attempt: AttemptCallback | None = None,
    ) -> JobResult:
        self.runs += 1
        raise RuntimeError("bug with secret detail 42")


async def test_unexpected_exception_fails_the_execution_and_the_task_once(
    start_execution: Any, fake_bids: Any
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    runner = CrashingRunner()
    _, stub = await start_execution(job_runner=runner)
    execution = await submit(stub, task_id)
    final = await final_state(stub, execution.execution_id)
    assert final.status == S.EXECUTION_STATUS_FAILED
    assert final.error_type == common_pb2.ERROR_TYPE_FATAL
    assert "secret detail" not in final.error_message
    assert runner.runs == 1
    assert bids.transitions[task_id] == ["StartTask", "FailTask"]


async def test_answer_too_deep_for_a_recursive_schema_fails_as_invalid_output(
    start_execution: Any, fake_bids: Any, openai_server: Any
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    for _ in range(5):
        openai_server.reply(DEEP_ANSWER)
    _, stub = await start_execution(**openai_settings(openai_server))
    execution = await submit(stub, task_id, output_schema=RECURSIVE_SCHEMA)
    final = await final_state(stub, execution.execution_id)
    assert final.status == S.EXECUTION_STATUS_FAILED
    assert final.error_type == common_pb2.ERROR_TYPE_PERMANENT
    assert len(openai_server.requests) == 2  # one re-ask, then the same error twice
    assert bids.transitions[task_id] == ["StartTask", "FailTask"]


async def test_nul_in_the_answer_is_stripped_and_the_task_completed(
    start_execution: Any, fake_bids: Any, openai_server: Any, db_url: str
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    openai_server.reply("before\x00after")
    _, stub = await start_execution(database_url=db_url, **openai_settings(openai_server))
    execution = await submit(stub, task_id)
    final = await final_state(stub, execution.execution_id)
    assert final.status == S.EXECUTION_STATUS_SUCCEEDED
    assert final.result == "beforeafter"
    assert bids.tasks[task_id].result == "beforeafter"


async def test_answer_over_the_bids_result_limit_fails_the_execution_and_the_task(
    start_execution: Any, fake_bids: Any, openai_server: Any
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    openai_server.reply("x" * 100_001)
    _, stub = await start_execution(**openai_settings(openai_server))
    execution = await submit(stub, task_id)
    final = await final_state(stub, execution.execution_id)
    assert final.status == S.EXECUTION_STATUS_FAILED
    assert final.error_type == common_pb2.ERROR_TYPE_PERMANENT
    assert "100000" in final.error_message
    assert bids.calls["CompleteTask"] == 0
    assert bids.tasks[task_id].status == bids_pb2.TASK_STATUS_FAILED


async def test_complete_task_refused_for_good_falls_back_to_fail_task(
    start_execution: Any, fake_bids: Any
) -> None:
    bids, _ = fake_bids
    task_id = bids.add_task()
    bids.refuse.add("CompleteTask")
    _, stub = await start_execution()
    execution = await submit(stub, task_id)
    final = await final_state(stub, execution.execution_id)
    assert final.status == S.EXECUTION_STATUS_FAILED
    assert "refused" in final.error_message
    assert bids.transitions[task_id] == ["StartTask", "FailTask"]
    assert "refused" in bids.fail_messages[task_id]
