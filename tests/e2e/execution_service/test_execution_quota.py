"""Complete's per-principal quota and the model allowlist, over the wire, tokens on both
services; the quota is counted in the database, so two replicas share it (SQLite and
PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from bids_support import Details, details
from execution_access import World, running_world
from marketplace.execution.v1 import execution_pb2 as pb

OFFLINE_DEFAULT = "offline-echo-1"
WorldFactory = Callable[..., AbstractAsyncContextManager[World]]


@pytest.fixture(params=["sqlite", "postgres"])
def execution_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path / 'execution.db'}"


@pytest.fixture
def make_world(execution_url: str, tmp_path: Path) -> WorldFactory:
    """Opens both services (``replicas`` execution servers on one database) with settings."""

    def factory(**settings: Any) -> AbstractAsyncContextManager[World]:
        bids_url = f"sqlite+aiosqlite:///{tmp_path / f'bids-{uuid.uuid4().hex}.db'}"
        return running_world(bids_url, execution_url, **settings)

    return factory


async def failure(call: Awaitable[Any]) -> Details:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return details(exc)
    raise AssertionError("the call succeeded")


def complete(prompt: str = "Say hello.", **fields: Any) -> pb.CompleteRequest:
    return pb.CompleteRequest(prompt=prompt, **fields)


async def outcomes(calls: list[Awaitable[Any]]) -> tuple[int, list[Details]]:
    """How many calls succeeded, and the refusals."""
    ok, refused = 0, []
    for result in await asyncio.gather(*calls, return_exceptions=True):
        if isinstance(result, grpc.aio.AioRpcError):
            refused.append(details(result))
        elif isinstance(result, BaseException):
            raise result
        else:
            ok += 1
    return ok, refused


def _minute() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0)


# --- model allowlist ----------------------------------------------------------------


async def test_only_the_default_model_without_an_allowlist(make_world: WorldFactory) -> None:
    async with make_world() as world:
        agent = world.execution("agent")
        assert (await agent.Complete(complete(model=OFFLINE_DEFAULT))).text
        assert (await agent.Complete(complete())).text
        refused = await failure(agent.Complete(complete(model="gpt-4o")))
        assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.fields == ["model"]
        assert OFFLINE_DEFAULT in refused.bad_request.field_violations[0].description  # type: ignore[union-attr]


async def test_the_allowlist_bounds_complete_and_submit(make_world: WorldFactory) -> None:
    async with make_world(llm_allowed_models=["small-model", "big-model"]) as world:
        agent = world.execution("agent")
        for model in ("small-model", "big-model", OFFLINE_DEFAULT, ""):
            assert (await agent.Complete(complete(model=model))).text
        refused = await failure(agent.Complete(complete(model="other-model")))
        assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.fields == ["model"]

        # SubmitExecution: refused before anything is stored.
        task_id = await world.won_task()
        refused = await failure(world.submit("agent", task_id, model="other-model"))
        assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.fields == ["model"]
        listed = await world.execution("admin").ListExecutions(
            pb.ListExecutionsRequest(task_id=task_id)
        )
        assert list(listed.executions) == []
        accepted = await world.submit("agent", task_id, model="big-model")
        assert accepted.model == "big-model"


# --- quota ---------------------------------------------------------------------------


async def test_calls_per_minute_are_counted_per_principal_across_replicas(
    make_world: WorldFactory,
) -> None:
    limit = 4
    async with make_world(replicas=2, complete_calls_per_minute=limit) as world:
        for _try in range(3):  # a burst that straddles a minute boundary is redone
            start = _minute()
            calls = [
                world.execution("agent", replica=i % 2).Complete(complete())
                for i in range(3 * limit)
            ]
            ok, refused = await outcomes(calls)
            if _minute() == start:
                break
        else:
            pytest.fail("three bursts in a row straddled a minute boundary")
        # Exactly the limit, over both replicas together; the rest told when to come back.
        assert ok == limit
        assert len(refused) == 2 * limit
        for r in refused:
            assert r.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert r.info.reason == "QUOTA_EXCEEDED"
            assert r.info.metadata["quota"] == "calls_per_minute"
            assert r.retry is not None
            assert 0 < r.retry.retry_delay.ToTimedelta().total_seconds() <= 60

        # Another principal has its own count; admin is not counted.
        assert (await world.execution("other_agent", replica=1).Complete(complete())).text
        assert (await world.execution("service").Complete(complete())).text
        ok_admin, _ = await outcomes(
            [world.execution("admin").Complete(complete()) for _ in range(limit + 2)]
        )
        assert ok_admin == limit + 2


async def test_tokens_per_day_stop_a_principal_until_the_day_ends(
    make_world: WorldFactory,
) -> None:
    limit = 30
    async with make_world(replicas=2, complete_tokens_per_day=limit) as world:
        prompt = "Count these words please " * 3  # 15 words: each call uses at least 15 tokens
        used = 0
        for replica in (0, 1):  # admitted while the day's tokens are below the limit
            if used >= limit:
                break
            answer = await world.execution("agent", replica).Complete(complete(prompt))
            used += answer.usage.prompt_tokens + answer.usage.completion_tokens
        assert used >= limit
        for replica in (0, 1):  # both replicas see the tokens charged through either
            refused = await failure(world.execution("agent", replica).Complete(complete()))
            assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert refused.info.reason == "QUOTA_EXCEEDED"
            assert refused.info.metadata["quota"] == "tokens_per_day"
            assert refused.retry is not None
            assert 0 < refused.retry.retry_delay.ToTimedelta().total_seconds() <= 86_400
        # Someone else still has the whole day.
        assert (await world.execution("other_agent").Complete(complete(prompt))).text


async def test_the_count_survives_a_restart(make_world: WorldFactory) -> None:
    """Counters live in the database, not in a process: a new server keeps the count."""
    for _try in range(3):  # a minute boundary between the two servers restarts the count
        start = _minute()
        async with make_world(complete_calls_per_minute=2) as world:
            for _ in range(2):
                await world.execution("agent").Complete(complete())
        async with make_world(complete_calls_per_minute=2) as world:
            ok, refused = await outcomes([world.execution("agent").Complete(complete())])
        if _minute() == start:
            break
    else:
        pytest.fail("three tries in a row straddled a minute boundary")
    assert ok == 0
    assert refused[0].info.reason == "QUOTA_EXCEEDED"
