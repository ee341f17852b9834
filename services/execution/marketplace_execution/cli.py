"""``execution-service serve [--migrate]`` and ``execution-service migrate``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from marketplace_common import runtime
from marketplace_common.auth import AuthConfigError
from marketplace_common.logging import configure_logging, get_logger
from marketplace_common.migrations import upgrade_async
from pydantic import ValidationError

from marketplace_execution.migrations import MIGRATIONS_DIR
from marketplace_execution.server import NotMigratedError, create_server
from marketplace_execution.settings import ExecutionSettings

_log = get_logger("marketplace_execution")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="execution-service",
        description="marketplace.execution.v1.ExecutionService (settings: EXECUTION_*)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve gRPC and run the worker pool until SIGTERM")
    serve.add_argument(
        "--migrate", action="store_true", help="upgrade the database to the newest schema first"
    )
    commands.add_parser("migrate", help="upgrade the database to the newest schema and exit")
    return parser


async def _serve(settings: ExecutionSettings, migrate: bool) -> int:
    if migrate:
        await upgrade_async(settings.database_url, MIGRATIONS_DIR)
    try:
        server, port = await create_server(settings)
    except (NotMigratedError, AuthConfigError, ValueError) as exc:
        return _refuse(exc)
    _log.info("execution.serving", port=port, **settings.log_summary())
    await server.serve_until_signal()
    return 0


def _refuse(exc: Exception) -> int:
    # Not migrated, protected mode or a bad LLM configuration: say so plainly, exit non-zero.
    _log.error("execution.refused_to_start", error=str(exc))
    print(f"execution-service: {exc}", file=sys.stderr)
    return 2


async def _migrate(settings: ExecutionSettings) -> int:
    await upgrade_async(settings.database_url, MIGRATIONS_DIR)
    _log.info("execution.migrated")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The console script's entry point."""
    args = _parser().parse_args(argv)
    try:
        settings = ExecutionSettings()
    except ValidationError as exc:
        print(f"execution-service: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_json)
    if args.command == "migrate":
        return runtime.run(_migrate(settings))
    return runtime.run(_serve(settings, args.migrate))


if __name__ == "__main__":
    raise SystemExit(main())
