"""The bids service instances the benchmark drives: subprocesses, one interpreter each.

The parent starts each as ``bench/bids_bench.py --serve-instance URL``; that
process runs ``serve_instance``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from marketplace_bids.server import create_server
from marketplace_bids.settings import BidsSettings
from marketplace_common.auth import hash_token
from marketplace_common.logging import configure_logging

BENCH_FILE = Path(__file__).resolve().parents[1] / "bids_bench.py"  # the entry point
AGENT, AGENT_TOKEN = "bench-agent", "bench-agent-token-" + "a" * 40
ADMIN, ADMIN_TOKEN = "bench-admin", "bench-admin-token-" + "b" * 40
AS_AGENT = (("authorization", f"Bearer {AGENT_TOKEN}"),)
AS_ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


def bench_settings(url: str, log_level: str, pool_size: int | None = None) -> BidsSettings:
    tokens = [
        f"{hash_token(AGENT_TOKEN)}=agent:{AGENT}",
        f"{hash_token(ADMIN_TOKEN)}=admin:{ADMIN}",
    ]
    settings = BidsSettings(
        grpc_port=0,
        metrics_port=0,
        database_url=url,
        auth_tokens=tokens,
        log_level=log_level,
        shutdown_grace_seconds=1.0,
    )
    if pool_size is not None:
        settings = settings.model_copy(update={"db_pool_size": pool_size})
    return settings


@dataclass(frozen=True)
class ServiceOptions:
    """How the bids instances are configured: the service's defaults unless told otherwise."""

    log_level: str = "INFO"
    pool_size: int | None = None  # None: the service's own db_pool_size default

    def argv(self) -> list[str]:
        pool = [] if self.pool_size is None else ["--service-pool-size", str(self.pool_size)]
        return ["--service-log-level", self.log_level, *pool]

    def describe(self) -> str:
        pool = "default" if self.pool_size is None else str(self.pool_size)
        return f"log level {self.log_level}, db_pool_size {pool}"


async def serve_instance(url: str, options: ServiceOptions) -> int:
    """The subprocess side: one bids service on port 0; prints the port, then serves.

    It stops on SIGTERM, and also when its stdin closes: the parent holds the
    other end, so a benchmark killed outright leaves no server behind.
    """
    settings = bench_settings(url, options.log_level, options.pool_size)
    configure_logging(settings.log_level, settings.log_json)
    server, port = await create_server(settings)
    print(port, flush=True)
    stdin = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    waits = [
        asyncio.ensure_future(server.serve_until_signal()),
        asyncio.ensure_future(stdin.read()),
    ]
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await server.stop(1.0)
    return 0


@dataclass(frozen=True)
class Instance:
    port: int
    pid: int


@asynccontextmanager
async def service_instances(
    url: str, count: int, options: ServiceOptions
) -> AsyncIterator[list[Instance]]:
    """``count`` bids service subprocesses on ``url`` (logs kept in temporary files)."""
    procs: list[tuple[asyncio.subprocess.Process, IO[str]]] = []
    try:
        for _ in range(count):
            log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed below)
            args = ["--serve-instance", url, *options.argv()]
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(BENCH_FILE),
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
            procs.append((proc, log))
        yield [Instance(await _read_port(proc, out), proc.pid) for proc, out in procs]
    finally:
        for proc, _ in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc, out in procs:
            try:
                await asyncio.wait_for(proc.wait(), timeout=20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
            out.close()


async def _read_port(proc: asyncio.subprocess.Process, log: IO[str]) -> int:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
    if not line.strip().isdigit():
        log.seek(0)
        raise RuntimeError(f"a bids instance did not start:\n{log.read()[-2000:]}")
    return int(line)
