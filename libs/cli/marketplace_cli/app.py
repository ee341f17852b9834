"""The marketctl application: global options, the shared call helper, the command groups."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import grpc
import typer
from google.protobuf.message import Message

from marketplace_cli.connection import (
    DEFAULT_BIDS,
    DEFAULT_EXECUTION,
    ConfigError,
    Connection,
)
from marketplace_cli.errors import CallError, Exit
from marketplace_cli.output import note
from marketplace_cli.values import ValueProblem

R = TypeVar("R")

app = typer.Typer(
    name="marketctl",
    help="The command-line client of the marketplace's bids and execution services.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@dataclass
class Cli:
    """One run's connection and output mode."""

    conn: Connection
    json: bool


@app.callback()
def _options(
    ctx: typer.Context,
    bids: Annotated[
        str, typer.Option(envvar="MARKETCTL_BIDS", help="The bids service's host:port.")
    ] = DEFAULT_BIDS,
    execution: Annotated[
        str,
        typer.Option(envvar="MARKETCTL_EXECUTION", help="The execution service's host:port."),
    ] = DEFAULT_EXECUTION,
    token: Annotated[
        str | None,
        typer.Option(envvar="MARKETCTL_TOKEN", help="Bearer token sent with every call."),
    ] = None,
    tls: Annotated[
        bool, typer.Option(envvar="MARKETCTL_TLS", help="TLS with the system's trusted CAs.")
    ] = False,
    ca_file: Annotated[
        Path | None,
        typer.Option(envvar="MARKETCTL_TLS_CA_FILE", help="CA (PEM) to trust; implies TLS."),
    ] = None,
    cert_file: Annotated[
        Path | None,
        typer.Option(
            envvar="MARKETCTL_TLS_CERT_FILE", help="Client certificate (PEM), for mutual TLS."
        ),
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option(envvar="MARKETCTL_TLS_KEY_FILE", help="Client key (PEM), for mutual TLS."),
    ] = None,
    server_name: Annotated[
        str | None,
        typer.Option(
            envvar="MARKETCTL_TLS_SERVER_NAME", help="Name to verify in the server certificate."
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(envvar="MARKETCTL_TIMEOUT", help="Seconds each call may take.")
    ] = 30.0,
    json: Annotated[
        bool, typer.Option("--json", help="Print the response's proto JSON (for scripts).")
    ] = False,
) -> None:
    """Targets and token from flags or MARKETCTL_BIDS, MARKETCTL_EXECUTION, MARKETCTL_TOKEN."""
    try:
        conn = Connection(
            bids=bids,
            execution=execution,
            token=token,
            tls=tls,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            server_name=server_name,
            timeout=timeout,
        )
    except ConfigError as exc:
        usage_error(str(exc))
    ctx.obj = Cli(conn, json)
    ctx.call_on_close(conn.close)


def state(ctx: typer.Context) -> Cli:
    cli = ctx.find_object(Cli)
    if cli is None:  # pragma: no cover - the callback always sets it
        raise RuntimeError("marketctl options not parsed")
    return cli


def usage_error(message: str) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(int(Exit.USAGE))


def parsed(make: Callable[[], R]) -> R:
    """``make()``, with a value problem reported as a usage error (exit 2)."""
    try:
        return make()
    except (ValueProblem, ConfigError) as exc:
        raise usage_error(str(exc)) from None


def ensure_id(value: str | None, name: str) -> str:
    """``value``, or a new UUID printed on stderr so a retry can reuse it."""
    if value:
        return value
    made = str(uuid.uuid4())
    flag = "--" + name.replace("_", "-")
    note(f"{name}: {made} (retry with {flag} {made} to repeat safely)")
    return made


def call(ctx: typer.Context, method: Callable[..., Any], request: Message) -> Any:
    """One unary call; a failure is printed (code, reason, violations) and exits by kind."""
    cli = state(ctx)
    try:
        return method(request, timeout=cli.conn.timeout, metadata=cli.conn.metadata())
    except grpc.RpcError as exc:
        raise typer.Exit(int(CallError.from_rpc_error(exc).report(as_json=cli.json))) from None
    except ConfigError as exc:
        raise usage_error(str(exc)) from None
