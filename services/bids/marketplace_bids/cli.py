"""``bids-service serve [--migrate]``, ``migrate``, ``health`` and ``purge``.

``purge`` deletes what retention no longer keeps (old idempotency records,
long-expired delivery tokens) once and exits: fit for a Kubernetes CronJob.
It prints one JSON line with the counts; on PostgreSQL it skips (exit 0,
``"skipped": true``) while another instance is purging.

See marketplace_common.service_cli.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from marketplace_common import migrations
from marketplace_common.db import create_engine
from marketplace_common.migrations import NotMigratedError
from marketplace_common.service_cli import ExtraCommand, ServiceCli

from marketplace_bids.api.servicer import BID_SERVICE_NAME
from marketplace_bids.migrations import SCRIPT_LOCATION
from marketplace_bids.server import create_server
from marketplace_bids.settings import BidsSettings
from marketplace_bids.storage.retention import Purger


async def purge(settings: BidsSettings) -> int:
    """One retention run; prints its counts as one JSON line."""
    engine = create_engine(settings.database_url, pool_size=2)
    try:
        try:
            await migrations.require_migrated(engine, SCRIPT_LOCATION, "bids")
        except NotMigratedError as exc:
            print(f"bids-service purge: {exc}")
            return 2
        result = await Purger(engine, settings.retention_policy()).purge()
    finally:
        await engine.dispose()
    print(
        json.dumps(
            {
                "idempotency_records": result.idempotency_records,
                "delivery_tokens": result.delivery_tokens,
                "batches": result.batches,
                "skipped": result.skipped,
            }
        )
    )
    return 0


CLI = ServiceCli(
    prog="bids-service",
    description="marketplace.bids.v1.BidService (settings: BIDS_*)",
    event_prefix="bids",
    settings_factory=BidsSettings,
    migrations_dir=SCRIPT_LOCATION,
    create_server=create_server,
    health_service=BID_SERVICE_NAME,
    refusals=(NotMigratedError,),
    extra_commands=(
        ExtraCommand(
            "purge",
            "delete old idempotency records and long-expired delivery tokens once, then exit",
            purge,
        ),
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script's entry point."""
    return CLI.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
