"""marketctl's entry point (the ``marketctl`` console script)."""

from __future__ import annotations

from marketplace_cli import bids_commands, execution_commands
from marketplace_cli.app import app

app.add_typer(bids_commands.tasks, name="tasks")
app.add_typer(bids_commands.bids, name="bids")
app.add_typer(bids_commands.deliveries, name="deliveries")
app.add_typer(execution_commands.executions, name="executions")
app.command("complete")(execution_commands.complete)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
