"""The bids service instances the benchmark drives: subprocesses, one interpreter each.

The parent starts each as ``bench/bids_bench.py --serve-instance URL``; that
process runs ``serve_instance``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from marketplace_bids.server import create_server
from marketplace_bids.settings import BidsSettings
from marketplace_common.auth import hash_token
from marketplace_common.logging import configure_logging

from bidsbench.bare import start_bare_server
from bidsbench.lag import LoopLag

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
    """The subprocess side: one bids service on port 0; prints the port, then serves."""
    settings = bench_settings(url, options.log_level, options.pool_size)
    configure_logging(settings.log_level, settings.log_json)
    server, port = await create_server(settings)
    await serve_until_parent_leaves(port, server.serve_until_signal())
    await server.stop(1.0)
    return 0


async def serve_bare(url: str, options: ServiceOptions) -> int:
    """The subprocess side of the bare server (bidsbench.bare), with the service's pool size."""
    pool_size = options.pool_size or BidsSettings.model_fields["db_pool_size"].default
    server, port, pool = await start_bare_server(url, pool_size)
    await serve_until_parent_leaves(port, server.wait_for_termination())
    await server.stop(1.0)
    await pool.close()
    return 0


async def serve_until_parent_leaves(port: int, serving: Awaitable[Any]) -> None:
    """Print the port, then serve until ``serving`` ends or stdin closes.

    The parent holds the other end of stdin, so a benchmark killed outright
    leaves no server behind. A line ``lag`` on stdin is answered on stdout
    with the event loop's p99 lag (ms) since the previous ``lag``.
    """
    lag = LoopLag()
    lag.start()
    print(port, flush=True)
    stdin = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    async def answer_lag_probes() -> None:
        while line := await stdin.readline():
            if line.strip() == b"lag":
                print(f"{lag.take_p99_ms():.3f}", flush=True)

    waits = [asyncio.ensure_future(serving), asyncio.ensure_future(answer_lag_probes())]
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    lag.stop()


@dataclass(frozen=True)
class Instance:
    port: int
    pid: int
    proc: asyncio.subprocess.Process

    async def loop_lag_p99_ms(self) -> float:
        """The server's event-loop lag p99 (ms) since the previous call."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(b"lag\n")
        await self.proc.stdin.drain()
        return float(await asyncio.wait_for(self.proc.stdout.readline(), timeout=30))


@asynccontextmanager
async def service_instances(
    url: str, count: int, options: ServiceOptions, *, bare: bool = False
) -> AsyncIterator[list[Instance]]:
    """``count`` bids service subprocesses on ``url`` (logs kept in temporary files).

    With ``bare``, the bare server (bidsbench.bare) instead of the service.
    """
    procs: list[tuple[asyncio.subprocess.Process, IO[str]]] = []
    try:
        for _ in range(count):
            log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed below)
            args = ["--serve-bare" if bare else "--serve-instance", url, *options.argv()]
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(BENCH_FILE),
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
            procs.append((proc, log))
        yield [Instance(await _read_port(proc, out), proc.pid, proc) for proc, out in procs]
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
        raise RuntimeError(f"a bids server did not start:\n{log.read()[-2000:]}")
    return int(line)
