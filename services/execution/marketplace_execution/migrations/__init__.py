"""Alembic migrations of the execution service's database."""

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parent
