"""A public bind needs an explicit LLM provider: refused without one, served with one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from marketplace_common.auth import hash_token, new_token
from marketplace_common.migrations import upgrade_async
from marketplace_execution.migrations import MIGRATIONS_DIR
from marketplace_execution.server import create_server
from marketplace_execution.settings import ExecutionSettings

BIN = Path(sys.executable).parent / "execution-service"


def serve(url: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EXECUTION_")}
    base.update(
        EXECUTION_DATABASE_URL=url,
        EXECUTION_GRPC_HOST="0.0.0.0",
        EXECUTION_GRPC_PORT="0",
        EXECUTION_METRICS_PORT="0",
        EXECUTION_AUTH_TOKENS=f"{hash_token(new_token())}=admin:ops",
        **env,
    )
    return subprocess.run(
        [str(BIN), "serve", "--migrate"],
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_on_a_public_bind_without_a_provider_refuses_in_one_line(sqlite_url: str) -> None:
    result = serve(sqlite_url, EXECUTION_LLM_PROVIDER="")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("execution-service:")]
    assert len(lines) == 1
    assert "EXECUTION_LLM_PROVIDER" in lines[0]
    assert "offline, openai" in lines[0]


async def test_a_public_bind_with_an_explicit_provider_serves(sqlite_url: str) -> None:
    await upgrade_async(sqlite_url, MIGRATIONS_DIR)
    settings = ExecutionSettings(
        grpc_host="0.0.0.0",
        grpc_port=0,
        metrics_port=0,
        database_url=sqlite_url,
        auth_tokens=[f"{hash_token(new_token())}=admin:ops"],
        llm_provider="offline",
        workers=0,
    )
    server, port = await create_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(0)
