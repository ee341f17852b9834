"""Composition root: settings -> engine -> store, BidService channel, LLM -> services ->
servicer, plus health, reflection and the worker pool.

``create_server(settings)`` builds and starts everything and returns the
server and its port (tests pass ``grpc_port=0``). Stopping (SIGTERM) takes one
shutdown grace in all: at once health turns NOT_SERVING and the worker pool
stops claiming; then in-flight calls and running executions drain together,
within the same grace; executions still running when it is over give their
leases back for another replica to resume; then the channel and engine close.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from marketplace.execution.v1 import execution_pb2_grpc
from marketplace_common import migrations
from marketplace_common.client import ClientTls, create_channel
from marketplace_common.clock import utc_now
from marketplace_common.db import create_engine
from marketplace_common.metrics import GrpcServerMetrics
from marketplace_common.server import GrpcServer, GrpcService, create_grpc_server
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_execution.api.bids_client import GrpcBidsGateway
from marketplace_execution.api.servicer import DOMAIN, SERVICE_NAME, ExecutionServicer
from marketplace_execution.domain.events import EventBus
from marketplace_execution.domain.metrics import ExecutionMetrics, QueueMonitor
from marketplace_execution.domain.ports import JobRunner
from marketplace_execution.domain.quota import CompleteQuota, QuotaLimits
from marketplace_execution.domain.reporting import ReportPolicy
from marketplace_execution.domain.run import RunContext
from marketplace_execution.domain.service import ExecutionService, ServiceConfig
from marketplace_execution.domain.store_retry import StoreRetryPolicy
from marketplace_execution.domain.worker import WorkerConfig, WorkerPool, new_owner_id
from marketplace_execution.llm.build import LLMStack, build_llm_stack
from marketplace_execution.metrics import PrometheusExecutionMetrics
from marketplace_execution.migrations import MIGRATIONS_DIR
from marketplace_execution.settings import ExecutionSettings, check_llm_provider_chosen
from marketplace_execution.storage.quota import SqlQuotaStore
from marketplace_execution.storage.store import SqlExecutionStore


@dataclass
class ExecutionServer:
    """A running execution service: the gRPC server, the worker pool and their resources."""

    grpc: GrpcServer
    service: ExecutionService
    pool: WorkerPool | None
    engine: AsyncEngine
    channel: Any  # a grpc.aio.Channel
    llm: LLMStack

    @property
    def port(self) -> int:
        return self.grpc.port

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop (see the module docstring); safe to call twice."""
        await self.grpc.stop(grace)

    async def serve_until_signal(self) -> None:
        """Serve until SIGTERM/SIGINT, then stop gracefully."""
        await self.grpc.serve_until_signal()


async def create_server(
    settings: ExecutionSettings,
    *,
    job_runner: JobRunner | None = None,
    require_migrated: bool = True,
) -> tuple[ExecutionServer, int]:
    """Build and start the execution service; returns it and its bound port.

    ``job_runner`` replaces the attempt loop built from the settings (tests).
    Raises ProviderNotChosenError (a ValueError) on a non-loopback bind without
    an explicit EXECUTION_LLM_PROVIDER, and TlsConfigError (a ValueError) for
    an unreadable EXECUTION_BIDS_TLS_* file, before anything is opened.
    """
    check_llm_provider_chosen(settings)
    bids_tls = bids_client_tls(settings)
    engine = create_engine(settings.database_url, pool_size=settings.effective_db_pool_size)
    if require_migrated:
        try:
            await migrations.require_migrated(engine, MIGRATIONS_DIR, "execution")
        except migrations.NotMigratedError:
            await engine.dispose()
            raise
    store = _store(engine)
    token = settings.bids_token.get_secret_value() if settings.bids_token else None
    channel = create_channel(
        settings.bids_target,
        token=token,
        tls=bids_tls or False,
        server_name=settings.bids_tls_server_name,
        load_balancing=settings.bids_load_balancing,
    )
    bids = GrpcBidsGateway(
        channel, timeout=settings.bids_timeout_seconds, max_in_flight=settings.bids_max_in_flight
    )
    metrics = GrpcServerMetrics()
    work_metrics = PrometheusExecutionMetrics(metrics.registry)
    llm = build_llm_stack(settings, work_metrics, engine)
    runner = job_runner or llm.runner
    bus = EventBus()
    pool = _pool(settings, store, bids, runner, bus, work_metrics)
    service = ExecutionService(
        store=store,
        bids=bids,
        runner=runner,
        bus=bus,
        config=ServiceConfig(
            default_model=settings.llm_model or llm.default_model,
            watch_poll_seconds=settings.watch_poll_seconds,
            cancel_wait_seconds=settings.cancel_wait_seconds,
            allowed_models=frozenset(settings.llm_allowed_models),
        ),
        now=utc_now,
        wake=pool.wake if pool else lambda: None,
        cancel_local=pool.cancel_local if pool else lambda _id: None,
        quota=CompleteQuota(
            SqlQuotaStore(engine),
            QuotaLimits(
                calls_per_minute=settings.complete_calls_per_minute or None,
                tokens_per_day=settings.complete_tokens_per_day or None,
            ),
            now=utc_now,
        ),
    )
    servicer = ExecutionServicer(service)
    add_fn = execution_pb2_grpc.add_ExecutionServiceServicer_to_server
    server = create_grpc_server(
        settings, [GrpcService(servicer, add_fn, SERVICE_NAME)], domain=DOMAIN, metrics=metrics
    )
    server.on_stopping(service.close_watches)
    handle = ExecutionServer(server, service, pool, engine, channel, llm)
    _add_shutdown_hooks(handle, settings)
    port = await server.start()
    if pool is not None:
        pool.start()
    if settings.queue_metrics_seconds > 0:
        monitor = QueueMonitor(store, work_metrics, utc_now, settings.queue_metrics_seconds)
        monitor.start()
        server.add_shutdown_hook(monitor.stop)
    return handle, port


def bids_client_tls(settings: ExecutionSettings) -> ClientTls | None:
    """The TLS side of the channel to BidService (None: plaintext).

    Raises TlsConfigError (a ValueError naming the setting) for a bad file.
    """
    if not settings.bids_tls_enabled:
        return None
    return ClientTls.from_files(
        settings.bids_tls_ca_file,
        settings.bids_tls_cert_file,
        settings.bids_tls_key_file,
        setting_prefix="EXECUTION_BIDS_",
    )


def _store(engine: AsyncEngine) -> SqlExecutionStore:
    return SqlExecutionStore(engine)


def _pool(
    settings: ExecutionSettings,
    store: SqlExecutionStore,
    bids: GrpcBidsGateway,
    runner: JobRunner,
    bus: EventBus,
    metrics: ExecutionMetrics,
) -> WorkerPool | None:
    if settings.workers == 0:
        return None
    ctx = RunContext(
        store=store,
        bids=bids,
        runner=runner,
        bus=bus,
        owner=new_owner_id(),
        now=utc_now,
        report_policy=ReportPolicy(),
        store_retry=StoreRetryPolicy(budget_seconds=settings.lease_seconds),
        metrics=metrics,
    )
    config = WorkerConfig(
        concurrency=settings.workers,
        lease_seconds=settings.lease_seconds,
        heartbeat_seconds=settings.heartbeat_seconds,
        poll_seconds=settings.poll_seconds,
    )
    return WorkerPool(ctx, config)


def _add_shutdown_hooks(handle: ExecutionServer, settings: ExecutionSettings) -> None:
    # Hooks run last-added first: the pool stops before the channel and engine close.
    handle.grpc.add_shutdown_hook(handle.engine.dispose)
    handle.grpc.add_shutdown_hook(handle.channel.close)
    handle.grpc.add_shutdown_hook(handle.llm.aclose)
    pool = handle.pool
    if pool is not None:
        grpc_server = handle.grpc
        # The stop begins: no new claim from now on (running executions go on).
        grpc_server.on_stopping(pool.stop_claiming)

        async def stop_pool() -> None:
            # After the calls drained: what is left of the same grace, not a second one.
            await pool.stop(grpc_server.remaining_grace())

        grpc_server.add_shutdown_hook(stop_pool)
