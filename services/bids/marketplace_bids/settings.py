"""BidsSettings: the bids service's configuration (environment prefix BIDS_)."""

from __future__ import annotations

from marketplace_common.settings import ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class BidsSettings(ServiceSettings):
    """Every setting, with the defaults of docs/design.md "Running"."""

    model_config = SettingsConfigDict(
        env_prefix="BIDS_", extra="ignore", validate_default=True, hide_input_in_errors=True
    )

    grpc_port: int = Field(default=50051, ge=0, le=65535)
    metrics_port: int = Field(default=9101, ge=0, le=65535)
    database_url: str = Field(default="sqlite+aiosqlite:///./var/bids.db", repr=False)
    db_pool_size: int = Field(default=20, ge=1, le=200)
    """Connections kept per instance (plus up to 10 overflow, closed again when returned).

    Sized above the usual number of RPCs in flight: at 10, 16 concurrent calls
    kept opening and closing overflow connections (a PostgreSQL backend each).
    """
    lock_timeout_ms: int = Field(default=5000, ge=1)
    """How long a transition waits for a row lock before answering ABORTED (PostgreSQL)."""
    transaction_attempts: int = Field(default=3, ge=1, le=10)
    """Tries of a transaction that hit a serialization failure or deadlock."""
