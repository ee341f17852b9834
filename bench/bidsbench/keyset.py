"""3. The deep keyset page against the first, as the repository's query and as a ListTasks RPC."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]
import grpc.aio
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from marketplace_bids.domain.ports import TaskFilter
from marketplace_common.paging import (
    decode_page_token,
    encode_page_token,
    filters_digest,
)

from bidsbench.common import Sizes, ms
from bidsbench.instances import AS_ADMIN
from bidsbench.listing import describe, list_query, plan, timed_fetch, uses_index
from bidsbench.report import Result

T = TypeVar("T")


@dataclass(frozen=True)
class DeepPage:
    filters: TaskFilter
    token: str  # the service's page token for page ``sizes.deep_page``
    first_id: str  # the task that must open that page


def list_scope(filters: TaskFilter) -> str:
    """The filter hash TaskService.list_tasks puts in (and checks on) its page tokens."""
    return filters_digest("tasks", {f.name: getattr(filters, f.name) for f in fields(filters)})


async def deep_page_token(conn: Any, sizes: Sizes, heavy: str) -> DeepPage:
    """The token the service hands out with page ``deep_page - 1``, built with its codec."""
    filters = TaskFilter(client_email=heavy)
    position = (sizes.deep_page - 1) * sizes.page_size - 1  # the last row of that page
    rows = await conn.fetch(
        "SELECT created_at, task_id FROM tasks WHERE client_email = $1 "
        "ORDER BY created_at DESC, task_id DESC OFFSET $2 LIMIT 2",
        heavy,
        position,
    )
    token = encode_page_token(rows[0]["created_at"], rows[0]["task_id"], list_scope(filters))
    return DeepPage(filters, token, rows[1]["task_id"])


def alternating(n: int, pair: tuple[T, T]) -> Iterator[T]:
    """``n`` rounds over both of ``pair``, alternating which goes first."""
    for i in range(n):
        yield from pair if i % 2 == 0 else pair[::-1]


async def time_pages_by_query(conn: Any, sizes: Sizes, deep: DeepPage) -> Result:
    limit, page = sizes.page_size + 1, sizes.deep_page
    after = decode_page_token(deep.token, list_scope(deep.filters))  # as list_tasks does
    first, deepest = list_query(deep.filters, None, limit), list_query(deep.filters, after, limit)
    if (await conn.fetch(deepest[0], *deepest[1]))[0]["task_id"] != deep.first_id:
        raise RuntimeError("the keyset query does not open the page at the expected row")
    times: dict[str, list[float]] = {"first": [], "deep": []}
    for i, (key, (sql, args)) in enumerate(
        alternating(sizes.page_samples + 2, (("first", first), ("deep", deepest)))
    ):
        took = await timed_fetch(conn, sql, args, limit)
        if i >= 4:  # the first two rounds warm up
            times[key].append(took)
    plans = [await plan(conn, *query) for query in (first, deepest)]
    first_ms, deep_ms = statistics.median(times["first"]), statistics.median(times["deep"])
    ratio, indexed = deep_ms / first_ms, all(uses_index(nodes) for nodes in plans)
    return Result(
        f"Keyset page {page} / page 1 (query, {sizes.deep_tasks:,} tasks of one client)",
        f"page {page} {ms(deep_ms)} vs page 1 {ms(first_ms)} (medians of {sizes.page_samples}); "
        f"plans: {describe(plans[1])} / {describe(plans[0])}",
        "<= 2.0x",
        ratio,
        ratio <= 2.0 and indexed,
        enforced=sizes.full,
    )


async def time_pages_by_rpc(port: int, sizes: Sizes, deep: DeepPage) -> Result:
    page, email = sizes.deep_page, deep.filters.client_email
    times: dict[str, list[float]] = {"": [], deep.token: []}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = bids_pb2_grpc.BidServiceStub(channel)
        for i, token in enumerate(alternating(sizes.page_samples + 2, ("", deep.token))):
            req = bids_pb2.ListTasksRequest(
                client_email=email, page_size=sizes.page_size, page_token=token
            )
            started = time.perf_counter()
            reply = await stub.ListTasks(req, timeout=30, metadata=AS_ADMIN)
            if i >= 4:  # the first two rounds warm up
                times[token].append(time.perf_counter() - started)
            if token and reply.tasks[0].task_id != deep.first_id:
                raise RuntimeError("ListTasks with the deep token opened the wrong page")
    first_ms, deep_ms = statistics.median(times[""]), statistics.median(times[deep.token])
    ratio = deep_ms / first_ms
    return Result(
        f"Keyset page {page} / page 1 (ListTasks RPC, {sizes.deep_tasks:,} tasks of one client)",
        f"page {page} {ms(deep_ms)} vs page 1 {ms(first_ms)} (medians of {sizes.page_samples})",
        "<= 2.0x",
        ratio,
        ratio <= 2.0,
        enforced=sizes.full,
    )


async def bench_deep_page(dsn: str, sizes: Sizes, heavy: str, port: int) -> list[Result]:
    conn = await asyncpg.connect(dsn)
    try:
        deep = await deep_page_token(conn, sizes, heavy)
        by_query = await time_pages_by_query(conn, sizes, deep)
    finally:
        await conn.close()
    return [by_query, await time_pages_by_rpc(port, sizes, deep)]
