"""One execution is one trace: the client's call, both services' server spans, the
worker's run and its LLM attempts, the calls into bids, and the log lines' ids.

Real servers (bids and execution, in process) with tracing installed on an in-memory
exporter before they are built; the test's own client call is the root span.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc.aio
import pytest
import structlog
from marketplace.bids.v1 import bids_pb2
from marketplace.common.v1 import common_pb2
from marketplace.execution.v1 import execution_pb2 as pb
from marketplace.execution.v1 import execution_pb2_grpc
from marketplace_common import tracing
from marketplace_common.client import create_channel
from marketplace_common.logging import configure_logging
from marketplace_common.migrations import upgrade_async
from marketplace_execution.migrations import MIGRATIONS_DIR
from marketplace_execution.server import create_server
from marketplace_execution.settings import ExecutionSettings
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

BIDS = "marketplace.bids.v1.BidService"
CLIENT_EMAIL = "alice@example.com"
EXECUTION = "marketplace.execution.v1.ExecutionService"
REQUEST_ID = "trace-e2e-request-1"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on (in memory) for the servers built during the test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.install(None)
    provider.shutdown()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging("INFO", json=True, stream=out)
    yield out
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_marketplace_handler", False)]:
        root.removeHandler(handler)


async def create_task(stack: Any, channel: grpc.aio.Channel) -> str:
    request = bids_pb2.CreateTaskRequest(
        request_id=str(uuid.uuid4()),
        client_email=CLIENT_EMAIL,
        title="Summarise the bids",
        description="Three sentences, please.",
        budget=common_pb2.Money(currency_code="EUR", units=12, nanos=500_000_000),
    )
    response = await stack.client_stub(channel).CreateTask(
        request, metadata=stack.client_metadata, timeout=10
    )
    return str(response.task.task_id)


def server_span(spans: list[ReadableSpan], service: str, method: str) -> ReadableSpan:
    [found] = [
        s
        for s in spans
        if s.kind is SpanKind.SERVER
        and s.attributes is not None
        and s.attributes.get("rpc.service") == service
        and s.attributes.get("rpc.method") == method
    ]
    return found


def ancestors(span: ReadableSpan, spans: list[ReadableSpan]) -> list[str]:
    """The names of ``span``'s parents, nearest first."""
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    names = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


async def finished_spans(exporter: InMemorySpanExporter, wanted: int) -> list[ReadableSpan]:
    """The exported spans once the bids calls of the run's end are in (they end last)."""
    async with asyncio.timeout(10):
        while True:
            spans = list(exporter.get_finished_spans())
            names = [s.name for s in spans]
            if names.count(f"{BIDS}/CompleteTask") >= wanted and "execution.run" in names:
                return spans
            await asyncio.sleep(0.05)


async def run_one_execution(bids_stack: Any, tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'execution.db'}"
    await upgrade_async(url, MIGRATIONS_DIR)
    settings = ExecutionSettings(
        grpc_port=0,
        metrics_port=0,
        database_url=url,
        bids_target=bids_stack.target,
        bids_token=bids_stack.service_token,
        poll_seconds=0.1,
        watch_poll_seconds=0.2,
    )
    server, port = await create_server(settings)
    tracer = tracing.tracer()
    try:
        async with (
            create_channel(bids_stack.target) as bids_channel,
            create_channel(f"127.0.0.1:{port}") as channel,
        ):
            task_id = await create_task(bids_stack, bids_channel)
            stub = execution_pb2_grpc.ExecutionServiceStub(channel)
            root = (
                contextlib.nullcontext()
                if tracer is None
                else tracer.start_as_current_span("client.submit")
            )
            with root:
                submitted = await stub.SubmitExecution(
                    pb.SubmitExecutionRequest(request_id=str(uuid.uuid4()), task_id=task_id),
                    metadata=(("x-request-id", REQUEST_ID),),
                )
            stream = stub.WatchExecution(
                pb.WatchExecutionRequest(execution_id=submitted.execution.execution_id),
                timeout=30,
            )
            events = [r.event async for r in stream]
            assert events[-1].execution.status == pb.EXECUTION_STATUS_SUCCEEDED
            return str(submitted.execution.execution_id)
    finally:
        await server.stop(0.5)


async def test_one_execution_is_one_trace_across_both_services(
    spans: InMemorySpanExporter, log_lines: io.StringIO, bids_stack: Any, tmp_path: Path
) -> None:
    execution_id = await run_one_execution(bids_stack, tmp_path)
    finished = await finished_spans(spans, wanted=1)

    [root] = [s for s in finished if s.name == "client.submit"]
    assert root.context is not None
    trace_id = root.context.trace_id
    in_trace = [s for s in finished if s.context is not None and s.context.trace_id == trace_id]

    submit = server_span(in_trace, EXECUTION, "SubmitExecution")
    get_task = server_span(in_trace, BIDS, "GetTask")
    start = server_span(in_trace, BIDS, "StartTask")
    complete = server_span(in_trace, BIDS, "CompleteTask")
    [run] = [s for s in in_trace if s.name == "execution.run"]
    attempts = [s for s in in_trace if s.name == "llm.attempt"]

    # The client's call is the parent of the execution service's server span, whose
    # GetTask reaches bids inside it; the worker's run continues the same trace.
    assert ancestors(submit, in_trace)[-1] == "client.submit"
    assert f"{EXECUTION}/SubmitExecution" in ancestors(get_task, in_trace)
    assert ancestors(run, in_trace)[0] == f"{EXECUTION}/SubmitExecution"
    assert run.attributes is not None
    assert run.attributes["execution.id"] == execution_id
    for bids_call in (start, complete):
        chain = ancestors(bids_call, in_trace)
        assert chain[0] == bids_call.name  # the worker's CLIENT span
        assert "execution.run" in chain
        # The worker carries the submit's request id into its calls to bids.
        assert bids_call.attributes is not None
        assert bids_call.attributes["marketplace.request_id"] == REQUEST_ID
        assert bids_call.attributes["rpc.grpc.status_code"] == 0
    assert len(attempts) == 1
    attempt = attempts[0].attributes
    assert attempt is not None
    assert attempt["llm.outcome"] == "succeeded"
    assert attempt["llm.delay_source"] == "NONE"
    assert ancestors(attempts[0], in_trace)[0] == "execution.run"

    # Log lines carry the active span's ids next to the request id.
    hex_trace = format(trace_id, "032x")
    logged = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    handled = {
        line["method"]: line
        for line in logged
        if line["event"] == "rpc.handled" and line.get("trace_id") == hex_trace
    }
    assert f"/{BIDS}/StartTask" in handled
    assert f"/{BIDS}/CompleteTask" in handled
    assert handled[f"/{BIDS}/CompleteTask"]["request_id"] == REQUEST_ID
    assert complete.context is not None
    assert handled[f"/{BIDS}/CompleteTask"]["span_id"] == format(complete.context.span_id, "016x")
    [finished_line] = [line for line in logged if line["event"] == "execution.finished"]
    assert finished_line["trace_id"] == hex_trace
    assert finished_line["request_id"] == REQUEST_ID


async def test_tracing_off_puts_no_ids_in_the_logs(
    log_lines: io.StringIO, bids_stack: Any, tmp_path: Path
) -> None:
    assert not tracing.enabled()
    await run_one_execution(bids_stack, tmp_path)
    logged = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    assert [line for line in logged if line["event"] == "execution.finished"]
    assert not [line for line in logged if "trace_id" in line or "span_id" in line]
