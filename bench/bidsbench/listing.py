"""2. ListTasks by client_email: the repository's query with the index against a forced seq scan.

Also the query helpers the keyset measurement reuses (the statement as
asyncpg SQL, its EXPLAIN plan, a checked timed fetch).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from marketplace_bids.domain.ports import TaskFilter
from marketplace_bids.storage.repositories import task_list_statement
from marketplace_common.paging import PageCursor
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

from bidsbench.common import LIST_INDEX, Sizes, ms
from bidsbench.loading import LoadedTasks
from bidsbench.report import Result

FORCE_SEQ = (
    "SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off; "
    "SET LOCAL enable_indexonlyscan = off"
)
_PG = asyncpg_dialect()  # type: ignore[no-untyped-call]


def list_query(filters: TaskFilter, after: PageCursor | None, limit: int) -> tuple[str, list[Any]]:
    """The repository's ListTasks statement as PostgreSQL/asyncpg SQL and its arguments."""
    compiled = task_list_statement(filters, after, limit).compile(dialect=_PG)
    args = []
    for name in compiled.positiontup or ():
        processor = compiled.binds[name].type.bind_processor(_PG)
        value = compiled.params[name]
        args.append(processor(value) if processor else value)
    return compiled.string, args


async def plan(conn: Any, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
    """Every node of the EXPLAIN plan of ``sql``."""
    doc = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args))
    nodes, todo = [], [doc[0]["Plan"]]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo.extend(node.get("Plans", []))
    return nodes


def uses_index(nodes: list[dict[str, Any]]) -> bool:
    names = {node.get("Index Name") for node in nodes}
    return LIST_INDEX in names and not any(n["Node Type"] == "Seq Scan" for n in nodes)


def describe(nodes: list[dict[str, Any]]) -> str:
    scans = [n for n in nodes if "Scan" in n["Node Type"]]
    return ", ".join(
        n["Node Type"] + (f" on {n['Index Name']}" if "Index Name" in n else "") for n in scans
    )


async def timed_fetch(conn: Any, sql: str, args: Sequence[Any], expect: int) -> float:
    started = time.perf_counter()
    rows = await conn.fetch(sql, *args)
    took = time.perf_counter() - started
    if len(rows) != expect:
        raise RuntimeError(f"the list query returned {len(rows)} rows, not {expect}")
    return took


async def timed_seq_fetch(conn: Any, sql: str, args: Sequence[Any], expect: int) -> float:
    """``timed_fetch`` with index and bitmap scans switched off for one transaction."""
    async with conn.transaction():
        await conn.execute(FORCE_SEQ)
        return await timed_fetch(conn, sql, args, expect)


async def bench_index_vs_seq(dsn: str, sizes: Sizes, loaded: LoadedTasks) -> list[Result]:
    limit = sizes.page_size + 1
    queries = [list_query(TaskFilter(client_email=email), None, limit) for email in loaded.sample]
    sql, per_seq = queries[0][0], max(1, sizes.index_samples // sizes.seq_samples)
    idx, seq = await asyncpg.connect(dsn), await asyncpg.connect(dsn)  # plans cached apart
    try:
        counts = dict(
            await idx.fetch(
                "SELECT client_email, count(*) FROM tasks WHERE client_email = ANY($1::text[]) "
                "GROUP BY client_email",
                loaded.sample,
            )
        )
        expect = [min(limit, counts.get(email, 0)) for email in loaded.sample]
        for i in range(min(5, len(queries))):  # warm up both
            await timed_fetch(idx, sql, queries[i][1], expect[i])
        await timed_seq_fetch(seq, sql, queries[0][1], expect[0])
        index_times, seq_times = [], []
        for rep in range(sizes.seq_samples):
            for i in (k % len(queries) for k in range(rep * per_seq, (rep + 1) * per_seq)):
                index_times.append(await timed_fetch(idx, sql, queries[i][1], expect[i]))
            i = rep % len(queries)
            seq_times.append(await timed_seq_fetch(seq, sql, queries[i][1], expect[i]))
        index_plan = await plan(idx, sql, queries[0][1])
        async with seq.transaction():
            await seq.execute(FORCE_SEQ)
            seq_plan = await plan(seq, sql, queries[0][1])
    finally:
        await idx.close()
        await seq.close()
    index_median, seq_median = statistics.median(index_times), statistics.median(seq_times)
    ratio = seq_median / index_median
    explain_ok = uses_index(index_plan) and any(n["Node Type"] == "Seq Scan" for n in seq_plan)
    return [
        Result(
            f"ListTasks by client_email on {sizes.tasks:,} tasks: forced seq scan / index",
            f"index {ms(index_median)} vs seq scan {ms(seq_median)} "
            f"(medians of {len(index_times)} / {len(seq_times)}, page of {sizes.page_size})",
            ">= 100x",
            ratio,
            ratio >= 100,
            enforced=sizes.full,
        ),
        Result(
            "ListTasks EXPLAIN: indexed run uses the index, forced run does not",
            f"indexed: {describe(index_plan)}; forced: {describe(seq_plan)}",
            f"Index Scan on {LIST_INDEX}",
            None,
            explain_ok,
            enforced=sizes.full,
        ),
    ]
