"""The console script every service has: ``<prog> serve [--migrate]`` and ``<prog> migrate``.

Behaviour operators and scripts rely on (docs/design.md, "Running"):

* ``migrate`` upgrades the database to the newest Alembic revision and exits 0.
* ``serve`` refuses to start (exit 2, one plain line on stderr and an error
  log event) on a database that is not migrated, unless ``--migrate`` is
  given; likewise in protected mode (a non-loopback bind without auth
  tokens) or on invalid settings.
* ``serve`` runs until SIGTERM/SIGINT, stops gracefully and exits 0.

Settings are built here, once, in the process's composition root.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from pydantic import ValidationError
from structlog.typing import FilteringBoundLogger

from marketplace_common import runtime
from marketplace_common.auth import AuthConfigError
from marketplace_common.logging import configure_logging, get_logger
from marketplace_common.migrations import upgrade_async
from marketplace_common.settings import ServiceSettings

S = TypeVar("S", bound=ServiceSettings)


class Servable(Protocol):
    """What ``serve`` needs of a started server."""

    async def serve_until_signal(self) -> None: ...


@dataclass(frozen=True)
class ServiceCli(Generic[S]):
    """One service's console script.

    Attributes:
        prog: the script's name (``bids-service``).
        description: one line for ``--help``.
        event_prefix: prefix of the log events (``bids`` -> ``bids.serving``).
        settings_factory: builds the settings from the environment.
        migrations_dir: the service's Alembic script location.
        create_server: builds and starts the server; returns it and its port.
        refusals: exceptions of ``create_server`` that mean "refuse to start"
            (the message is shown as is) rather than a crash.
    """

    prog: str
    description: str
    event_prefix: str
    settings_factory: Callable[[], S]
    migrations_dir: Path
    create_server: Callable[[S], Awaitable[tuple[Servable, int]]]
    refusals: tuple[type[Exception], ...] = ()

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Parse ``argv``, build the settings and run the command; the exit code."""
        args = self._parser().parse_args(argv)
        try:
            settings = self.settings_factory()
        except ValidationError as exc:
            print(f"{self.prog}: invalid settings:\n{exc}", file=sys.stderr)
            return 2
        configure_logging(settings.log_level, settings.log_json)
        if args.command == "migrate":
            return runtime.run(self._migrate(settings))
        return runtime.run(self._serve(settings, migrate=args.migrate))

    def _parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description)
        commands = parser.add_subparsers(dest="command", required=True)
        serve = commands.add_parser("serve", help="serve gRPC until SIGTERM/SIGINT")
        serve.add_argument(
            "--migrate", action="store_true", help="upgrade the database to the newest schema first"
        )
        commands.add_parser("migrate", help="upgrade the database to the newest schema and exit")
        return parser

    async def _serve(self, settings: S, *, migrate: bool) -> int:
        if migrate:
            await upgrade_async(settings.database_url, self.migrations_dir)
        refusals: tuple[type[Exception], ...] = (AuthConfigError, *self.refusals)
        try:
            server, port = await self.create_server(settings)
        except refusals as exc:
            return self._refuse(exc)
        self._log().info(f"{self.event_prefix}.serving", port=port, **settings.log_summary())
        await server.serve_until_signal()
        return 0

    def _refuse(self, exc: Exception) -> int:
        # Not migrated, protected mode or a bad configuration: say so plainly, exit 2.
        self._log().error(f"{self.event_prefix}.refused_to_start", error=str(exc))
        print(f"{self.prog}: {exc}", file=sys.stderr)
        return 2

    async def _migrate(self, settings: S) -> int:
        await upgrade_async(settings.database_url, self.migrations_dir)
        self._log().info(f"{self.event_prefix}.migrated")
        return 0

    def _log(self) -> FilteringBoundLogger:
        return get_logger(f"marketplace_{self.event_prefix}")
