"""What marketctl prints: tables for people, the response's proto JSON with --json."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

_stdout = Console(highlight=False, soft_wrap=True)
_stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def proto_json(message: Message, *, indent: int | None = 2) -> str:
    """The proto JSON of ``message`` (field names as in the .proto, as grpcurl prints them)."""
    return json_format.MessageToJson(
        message, preserving_proto_field_name=True, indent=indent, sort_keys=False
    )


def print_json(message: Message, *, indent: int | None = 2) -> None:
    sys.stdout.write(proto_json(message, indent=indent) + "\n")
    sys.stdout.flush()


def note(text: str) -> None:
    """A line for the person on stderr (ids to reuse, next page token): never in the JSON."""
    _stderr.print(text, markup=False)


def record(title: str, rows: Iterable[tuple[str, str]]) -> None:
    """One object as a two-column table (field, value), empty values left out."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in rows:
        if value != "":
            table.add_row(name, value)
    _stdout.print(table)


def rows(title: str, columns: Sequence[str], data: Iterable[Sequence[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in data:
        table.add_row(*row)
    return table


def show(table: Table) -> None:
    _stdout.print(table)
