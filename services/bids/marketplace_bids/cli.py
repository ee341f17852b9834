"""``bids-service serve [--migrate]`` and ``bids-service migrate``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from marketplace_common import runtime
from marketplace_common.auth import AuthConfigError
from marketplace_common.logging import configure_logging, get_logger
from marketplace_common.migrations import upgrade_async

from marketplace_bids.migrations import SCRIPT_LOCATION
from marketplace_bids.server import NotMigratedError, create_server
from marketplace_bids.settings import BidsSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bids-service", description="marketplace.bids.v1.BidService (settings: BIDS_*)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve gRPC until SIGTERM/SIGINT")
    serve.add_argument(
        "--migrate", action="store_true", help="upgrade the database to the newest schema first"
    )
    commands.add_parser("migrate", help="upgrade the database to the newest schema and exit")
    return parser


async def _serve(settings: BidsSettings, migrate: bool) -> int:
    log = get_logger("marketplace_bids")
    if migrate:
        await upgrade_async(settings.database_url, SCRIPT_LOCATION)
    try:
        server, port = await create_server(settings)
    except (NotMigratedError, AuthConfigError) as exc:
        return _refuse(exc)
    log.info("bids.serving", port=port, **settings.log_summary())
    await server.serve_until_signal()
    return 0


def _refuse(exc: Exception) -> int:
    # Not migrated, or protected mode: say so plainly and exit non-zero.
    get_logger("marketplace_bids").error("bids.refused_to_start", error=str(exc))
    print(f"bids-service: {exc}", file=sys.stderr)
    return 2


async def _migrate(settings: BidsSettings) -> int:
    await upgrade_async(settings.database_url, SCRIPT_LOCATION)
    get_logger("marketplace_bids").info("bids.migrated")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The console script's entry point."""
    args = _parser().parse_args(argv)
    settings = BidsSettings()
    configure_logging(settings.log_level, settings.log_json)
    if args.command == "migrate":
        return runtime.run(_migrate(settings))
    return runtime.run(_serve(settings, args.migrate))


if __name__ == "__main__":
    raise SystemExit(main())
