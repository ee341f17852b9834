"""Where one bids RPC's time goes: py-spy on a service instance under the request path's load.

    .venv/bin/python bench/profile_rpc.py GetBid [--seconds 15] [--out profile.txt]

Starts one bids instance as ``bench/bids_bench.py`` does (subprocess, auth on,
shipped defaults) on a throwaway PostgreSQL database, drives RPC with the
request path's client (32 in flight), and samples the instance with py-spy
(``record --format raw``, which needs ptrace rights over the child: root, or
``kernel.yama.ptrace_scope=0``). Prints the functions with the largest share
of samples, by themselves (self) and with what they call (inclusive); the
raw collapsed stacks stay in ``--out`` for a flame graph.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any

import grpc.aio
from bids_bench import DEFAULT_PG_URL, PG_URL_ENV
from bidsbench.instances import ServiceOptions, service_instances
from bidsbench.loading import place_pending_bids
from bidsbench.request_path import (
    _cycle,
    _fresh_jobs,
    drive_timed,
    get_bid,
    list_bids,
    place_bid,
    withdraw_bid,
)
from marketplace.bids.v1 import bids_pb2_grpc
from marketplace_bids.migrations import SCRIPT_LOCATION
from marketplace_common import runtime
from marketplace_common.migrations import upgrade_async
from marketplace_common.pg_admin import asyncpg_dsn, throwaway_database

RPCS = ("GetBid", "ListBids", "PlaceBid", "WithdrawBid")
CONCURRENCY, BATCH = 32, 200


def _calls(rpc: str, ids: list[str]) -> tuple[Callable[..., Awaitable[None]], Iterator[Any]]:
    return {
        "GetBid": (get_bid, _cycle(ids)),
        "ListBids": (list_bids, _cycle([None])),
        "PlaceBid": (place_bid, _fresh_jobs()),
        "WithdrawBid": (withdraw_bid, iter(ids)),
    }[rpc]


def _py_spy() -> str:
    found = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy not found: make .venv/.installed-dev installs it")
    return found


async def profile(rpc: str, seconds: int, out: str, pg_url: str) -> int:
    """Load one instance with ``rpc`` while py-spy samples it; the number of calls made."""
    spy_binary = _py_spy()
    async with throwaway_database(pg_url, prefix="marketplace_profile") as url:
        await upgrade_async(url, SCRIPT_LOCATION)
        # enough unique bids for WithdrawBid at ~2,000 calls/s over the run
        ids = await place_pending_bids(asyncpg_dsn(url), 2_000 * (seconds + 5), job_prefix="prof")
        async with service_instances(url, 1, ServiceOptions()) as (instance,):
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{instance.port}")
            try:
                call, items = _calls(rpc, ids)
                op = partial(call, bids_pb2_grpc.BidServiceStub(channel))
                await drive_timed(CONCURRENCY, [next(items) for _ in range(300)], op)  # warm up
                command = [spy_binary, "record", "--pid", str(instance.pid)]
                command += ["--duration", str(seconds), "--rate", "200", "--nonblocking"]
                command += ["--format", "raw", "--output", out]
                spy = await asyncio.create_subprocess_exec(
                    *command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
                )
                calls = 0
                while spy.returncode is None:
                    await drive_timed(CONCURRENCY, [next(items) for _ in range(BATCH)], op)
                    calls += BATCH
                _, errors = await spy.communicate()
                if spy.returncode != 0:
                    raise SystemExit(f"py-spy failed: {errors.decode().strip()}")
                return calls
            finally:
                await channel.close(None)


_CUT = ("site-packages/", "services/", "libs/common/", "/lib/python3")


def _short(frame: str) -> str:
    name, _, location = frame.partition(" (")
    path = location.split(":")[0]
    for cut in _CUT:
        if cut in path:
            path = path.split(cut)[-1]
    return f"{name} ({path})"


def summarize(raw_path: str, top: int = 40) -> str:
    """Self and inclusive shares of py-spy's collapsed stacks (``frame;frame;... count``)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    with open(raw_path) as raw:
        for line in raw:
            stack, _, count = line.rstrip().rpartition(" ")
            if not re.fullmatch(r"\d+", count):
                continue
            n = int(count)
            total += n
            frames = [_short(f) for f in stack.split(";")]
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    lines = [f"{total} samples", "--- self"]
    lines += [f"{100 * n / total:5.1f}% {f}" for f, n in own.most_common(top // 2)]
    lines += ["--- inclusive"]
    lines += [f"{100 * n / total:5.1f}% {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("rpc", choices=RPCS)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--out", default="profile.txt", help="py-spy's raw collapsed stacks")
    parser.add_argument("--pg-url", default=os.environ.get(PG_URL_ENV, DEFAULT_PG_URL))
    args = parser.parse_args()
    calls = runtime.run(profile(args.rpc, args.seconds, args.out, args.pg_url))
    print(f"{args.rpc}: {calls} calls while sampling for {args.seconds} s")
    print(summarize(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
