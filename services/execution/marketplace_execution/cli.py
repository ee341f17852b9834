"""``execution-service serve [--migrate]``, ``execution-service migrate`` and
``execution-service health``.

See marketplace_common.service_cli; ``serve`` also runs the worker pool. A
bad LLM configuration (ValueError from the composition root) refuses to start.
"""

from __future__ import annotations

from collections.abc import Sequence

from marketplace_common.migrations import NotMigratedError
from marketplace_common.service_cli import ServiceCli

from marketplace_execution.api.servicer import SERVICE_NAME
from marketplace_execution.migrations import MIGRATIONS_DIR
from marketplace_execution.server import create_server
from marketplace_execution.settings import ExecutionSettings

CLI = ServiceCli(
    prog="execution-service",
    description="marketplace.execution.v1.ExecutionService (settings: EXECUTION_*)",
    event_prefix="execution",
    settings_factory=ExecutionSettings,
    migrations_dir=MIGRATIONS_DIR,
    create_server=create_server,
    health_service=SERVICE_NAME,
    refusals=(NotMigratedError, ValueError),
)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script's entry point."""
    return CLI.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
