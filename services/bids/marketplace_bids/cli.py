"""``bids-service serve [--migrate]``, ``bids-service migrate`` and ``bids-service health``.

See marketplace_common.service_cli.
"""

from __future__ import annotations

from collections.abc import Sequence

from marketplace_common.migrations import NotMigratedError
from marketplace_common.service_cli import ServiceCli

from marketplace_bids.api.servicer import BID_SERVICE_NAME
from marketplace_bids.migrations import SCRIPT_LOCATION
from marketplace_bids.server import create_server
from marketplace_bids.settings import BidsSettings

CLI = ServiceCli(
    prog="bids-service",
    description="marketplace.bids.v1.BidService (settings: BIDS_*)",
    event_prefix="bids",
    settings_factory=BidsSettings,
    migrations_dir=SCRIPT_LOCATION,
    create_server=create_server,
    health_service=BID_SERVICE_NAME,
    refusals=(NotMigratedError,),
)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script's entry point."""
    return CLI.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
