"""Composition root: settings -> engine -> unit of work -> services -> servicer -> server.

``create_server(settings)`` builds and starts everything and returns the
handle and the bound port (tests pass ``grpc_port=0``). Stopping stops the
gRPC server gracefully (health NOT_SERVING, in-flight calls finish), then
disposes of the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from marketplace.bids.v1 import bids_pb2_grpc
from marketplace_common import migrations
from marketplace_common.db import create_engine
from marketplace_common.server import GrpcServer, GrpcService, create_grpc_server
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_bids.api.servicer import BID_SERVICE_NAME, ERROR_DOMAIN, BidServicer
from marketplace_bids.domain.bid_service import BidService
from marketplace_bids.domain.delivery_service import DeliveryService
from marketplace_bids.domain.task_service import TaskService
from marketplace_bids.migrations import SCRIPT_LOCATION
from marketplace_bids.settings import BidsSettings
from marketplace_bids.storage.retention import Purger
from marketplace_bids.storage.unit_of_work import SqlUnitOfWork


@dataclass
class BidsServer:
    """A running bids service: the gRPC server and the engine behind it."""

    grpc: GrpcServer
    engine: AsyncEngine

    @property
    def port(self) -> int:
        return self.grpc.port

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop; safe to call twice."""
        await self.grpc.stop(grace)

    async def serve_until_signal(self) -> None:
        """Serve until SIGTERM/SIGINT, then stop gracefully."""
        await self.grpc.serve_until_signal()


def build_servicer(engine: AsyncEngine, settings: BidsSettings) -> BidServicer:
    """The servicer and the domain services under it, on ``engine``."""
    uow = SqlUnitOfWork(
        engine,
        lock_timeout_ms=settings.lock_timeout_ms,
        attempts=settings.transaction_attempts,
    )
    return BidServicer(TaskService(uow), BidService(uow), DeliveryService(uow))


async def create_server(
    settings: BidsSettings, *, require_migrated: bool = True
) -> tuple[BidsServer, int]:
    """Build and start the bids service; returns it and its bound port.

    Raises NotMigratedError when ``require_migrated`` and the database is behind.
    """
    engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
    try:
        if require_migrated:
            await migrations.require_migrated(engine, SCRIPT_LOCATION, "bids")
        servicer = build_servicer(engine, settings)
        add_fn = bids_pb2_grpc.add_BidServiceServicer_to_server
        server = create_grpc_server(
            settings, [GrpcService(servicer, add_fn, BID_SERVICE_NAME)], domain=ERROR_DOMAIN
        )
    except BaseException:
        await engine.dispose()
        raise
    server.add_shutdown_hook(engine.dispose)
    port = await server.start()
    if settings.retention_interval_seconds > 0:
        purger = Purger(engine, settings.retention_policy())
        job = asyncio.create_task(purger.run_every(settings.retention_interval_seconds))

        async def stop_purging() -> None:
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job

        server.add_shutdown_hook(stop_purging)
    return BidsServer(server, engine), port
