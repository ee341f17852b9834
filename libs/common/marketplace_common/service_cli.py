"""The console script every service has: ``<prog> serve [--migrate]`` and ``<prog> migrate``.

Behaviour operators and scripts rely on (docs/design.md, "Running"):

* ``migrate`` upgrades the database to the newest Alembic revision and exits 0.
* ``serve`` refuses to start (exit 2, one plain line on stderr and an error
  log event) on a database that is not migrated, unless ``--migrate`` is
  given; likewise in protected mode (a non-loopback bind without auth
  tokens), on a missing or non-PEM TLS file, or on invalid settings.
* ``serve`` runs until SIGTERM/SIGINT, stops gracefully and exits 0.
* ``serve --workers N`` (or ``*_PROCESSES=N``), N > 1, runs N server processes
  on the one port under a supervising process (marketplace_common.supervisor):
  the ports are checked and the migrations run (or the schema is checked) once,
  in the supervisor, before it forks; it needs PostgreSQL (on SQLite, the
  embedded default, it refuses with exit 2: one process writes a SQLite file).
* ``health`` asks the service listening on the configured port (or
  ``--target``) over grpc.health.v1: exit 0 only on SERVING, 1 on any other
  answer, 2 when unreachable (see marketplace_common.health_probe). It is the
  healthcheck command of the container images.
* ``serve`` traces when the ``OTEL_*`` variables say so (``marketplace_common.tracing``;
  the default service name is ``event_prefix``); an exporter it does not know refuses
  to start. The last spans are flushed on the way out.

Settings are built here, once, in the process's composition root.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from pydantic import ValidationError
from structlog.typing import FilteringBoundLogger

from marketplace_common import runtime, tracing
from marketplace_common.auth import AuthConfigError
from marketplace_common.client import TlsConfigError
from marketplace_common.db import create_engine
from marketplace_common.health_probe import ProbeExit, ProbeTls, local_target, probe
from marketplace_common.logging import bind_process_fields, configure_logging, get_logger
from marketplace_common.migrations import require_migrated, upgrade_async
from marketplace_common.ports import check_port_free
from marketplace_common.settings import ServiceSettings
from marketplace_common.supervisor import Supervisor

S = TypeVar("S", bound=ServiceSettings)


class _EarlySignals:
    """SIGTERM/SIGINT received while the server is being built, kept for later.

    ``redeliver`` sends them again on the next loop iteration: the caller then
    awaits ``serve_until_signal`` at once, whose handlers are installed before
    its first await, so the signal stops the server gracefully.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.received: list[signal.Signals] = []
        for sig in self.SIGNALS:
            self._loop.add_signal_handler(sig, self.received.append, sig)
        # One of several processes starts with them blocked (the supervisor's
        # fork): a stop sent meanwhile is pending and arrives now, to be kept.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.SIGNALS)

    def remove(self) -> None:
        for sig in self.SIGNALS:
            self._loop.remove_signal_handler(sig)

    def redeliver(self) -> None:
        for sig in self.received[:1]:
            self._loop.call_soon(os.kill, os.getpid(), sig)


class Servable(Protocol):
    """What ``serve`` needs of a started server."""

    async def serve_until_signal(self) -> None: ...


@dataclass(frozen=True)
class ExtraCommand(Generic[S]):
    """A service's own command beside serve/migrate/health (e.g. ``purge``).

    ``run`` gets the settings and returns the exit code; logging is configured first.
    """

    name: str
    help: str
    run: Callable[[S], Coroutine[Any, Any, int]]


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
        health_service: the full service name ``health`` asks about by default
            (``marketplace.bids.v1.BidService``); SERVING only while it serves.
        extra_commands: the service's own commands (``bids-service purge``).
    """

    prog: str
    description: str
    event_prefix: str
    settings_factory: Callable[[], S]
    migrations_dir: Path
    create_server: Callable[[S], Awaitable[tuple[Servable, int]]]
    refusals: tuple[type[Exception], ...] = ()
    health_service: str = ""
    extra_commands: tuple[ExtraCommand[S], ...] = ()

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Parse ``argv``, build the settings and run the command; the exit code."""
        args = self._parser().parse_args(argv)
        try:
            settings = self.settings_factory()
        except ValidationError as exc:
            print(f"{self.prog}: invalid settings:\n{exc}", file=sys.stderr)
            return 2
        if args.command == "health":
            return self._health(settings, args)
        configure_logging(settings.log_level, settings.log_json)
        if args.command == "migrate":
            return runtime.run(self._migrate(settings))
        for extra in self.extra_commands:
            if args.command == extra.name:
                return runtime.run(extra.run(settings))
        if args.processes is not None:
            settings = settings.model_copy(update={"processes": args.processes})
        if settings.processes > 1:
            return self._serve_processes(settings, migrate=args.migrate)
        return runtime.run(self._serve(settings, migrate=args.migrate))

    def _parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description)
        commands = parser.add_subparsers(dest="command", required=True)
        serve = commands.add_parser("serve", help="serve gRPC until SIGTERM/SIGINT")
        serve.add_argument(
            "--migrate", action="store_true", help="upgrade the database to the newest schema first"
        )
        serve.add_argument(
            "--workers",
            "--processes",
            dest="processes",
            type=_process_count,
            metavar="N",
            help="server processes sharing the port (default: the PROCESSES setting, 1);"
            " more than 1 needs PostgreSQL",
        )
        commands.add_parser("migrate", help="upgrade the database to the newest schema and exit")
        for extra in self.extra_commands:
            commands.add_parser(extra.name, help=extra.help)
        health = commands.add_parser(
            "health", help="exit 0 if the running service answers SERVING (grpc.health.v1)"
        )
        health.add_argument(
            "--target", help="host:port to ask (default: this service's configured port, locally)"
        )
        health.add_argument(
            "--service",
            default=self.health_service,
            help=f"the service to ask about (default: {self.health_service or 'the server'};"
            ' "" for the whole server)',
        )
        health.add_argument("--timeout", type=float, default=3.0, help="seconds (default: 3)")
        health.add_argument(
            "--ca-file", type=Path, help="speak TLS, trusting this CA (PEM) for the server"
        )
        health.add_argument("--cert-file", type=Path, help="with --ca-file: client certificate")
        health.add_argument("--key-file", type=Path, help="with --ca-file: its private key")
        health.add_argument(
            "--server-name", help="with --ca-file: the name the server's certificate carries"
        )
        return parser

    def _health(self, settings: S, args: argparse.Namespace) -> int:
        target = args.target or local_target(settings.grpc_host, settings.grpc_port)
        tls = None
        if args.ca_file is not None:
            tls = ProbeTls(args.ca_file, args.cert_file, args.key_file, args.server_name)
        try:
            result = probe(target, args.service, timeout=args.timeout, tls=tls)
        except OSError as exc:  # an unreadable --ca-file / --cert-file / --key-file
            print(f"{self.prog} health: {exc}", file=sys.stderr)
            return int(ProbeExit.UNREACHABLE)
        out = sys.stderr if result.code else sys.stdout
        print(f"{self.prog} health: {result.message}", file=out)
        return int(result.code)

    async def _serve(self, settings: S, *, migrate: bool) -> int:
        if migrate:
            await upgrade_async(settings.database_url, self.migrations_dir)
        refusals: tuple[type[Exception], ...] = (
            AuthConfigError,
            TlsConfigError,
            tracing.TracingConfigError,
            *self.refusals,
        )
        # The server listens before serve_until_signal installs its handlers: a
        # SIGTERM in between (an orchestrator stopping a pod that just started)
        # would kill the process outright. Remember it, and deliver it again once
        # the graceful handlers are in place.
        early = _EarlySignals()
        try:
            tracing.configure_from_env(self.event_prefix)
            server, port = await self.create_server(settings)
        except refusals as exc:
            return self._refuse(exc)
        except OSError as exc:
            # A port in use (the message names the setting that moves it) or a bind
            # address this host does not have: one line, no trace.
            return self._refuse(exc)
        finally:
            early.remove()
        self._log().info(
            f"{self.event_prefix}.serving",
            port=port,
            tracing=tracing.exporter_names(os.environ) or "off",
            **settings.log_summary(),
        )
        early.redeliver()
        try:
            await server.serve_until_signal()
        finally:
            await asyncio.to_thread(tracing.shutdown)
        return 0

    def _serve_processes(self, settings: S, *, migrate: bool) -> int:
        """``serve --workers N``: checks and migrations once, then N forked servers."""
        prefix = str(settings.model_config.get("env_prefix", "")).upper()
        count = settings.processes
        if settings.database_url.startswith("sqlite"):
            return self._refuse(
                ValueError(
                    f"{count} server processes need PostgreSQL: a SQLite database (the "
                    f"embedded default) takes writes from one process; serve one process "
                    f"(--workers 1, {prefix}PROCESSES=1) or set {prefix}DATABASE_URL to "
                    "postgresql+asyncpg://..."
                )
            )
        metrics_host = settings.metrics_host or settings.grpc_host
        try:
            check_port_free(
                settings.grpc_host, settings.grpc_port, what="gRPC", setting=f"{prefix}GRPC_PORT"
            )
            if settings.metrics_port:
                check_port_free(
                    metrics_host,
                    settings.metrics_port,
                    what="metrics",
                    setting=f"{prefix}METRICS_PORT",
                )
            # The stdlib loop, not uvloop: its threads are gone when it returns, and
            # the fork that follows must copy no thread.
            asyncio.run(self._prepare(settings, migrate=migrate))
        except self.refusals as exc:  # not migrated
            return self._refuse(exc)
        except OSError as exc:  # a port in use (PortInUseError), the database unreachable
            return self._refuse(exc)

        def worker(index: int, port: int) -> int:
            bind_process_fields(worker=index, pid=os.getpid())
            own = settings.model_copy(update={"grpc_port": port, "metrics_port": 0})
            return runtime.run(self._serve(own, migrate=False))

        supervisor = Supervisor(
            count=count,
            host=settings.grpc_host,
            port=settings.grpc_port,
            grace_seconds=settings.shutdown_grace_seconds,
            metrics_host=metrics_host,
            metrics_port=settings.metrics_port,
            worker_main=worker,
            log=get_logger(f"marketplace_{self.event_prefix}.supervisor"),
        )
        try:
            return supervisor.run()
        except OSError as exc:  # the port reservation (a bind address this host lacks)
            return self._refuse(exc)

    async def _prepare(self, settings: S, *, migrate: bool) -> None:
        """What the processes must not each do: migrate, or check the schema once."""
        if migrate:
            await upgrade_async(settings.database_url, self.migrations_dir)
            return
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            await require_migrated(engine, self.migrations_dir, self.event_prefix)
        finally:
            await engine.dispose()

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


def _process_count(text: str) -> int:
    """argparse type of ``--workers``: 1..64, like the PROCESSES setting."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"between 1 and 64, not {value}")
    return value
