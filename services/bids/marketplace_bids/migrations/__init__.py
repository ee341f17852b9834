"""Alembic migrations of the bids service."""

from pathlib import Path

#: The directory to hand to marketplace_common.migrations (script_location).
SCRIPT_LOCATION = Path(__file__).resolve().parent
