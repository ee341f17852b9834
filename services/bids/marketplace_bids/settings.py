"""BidsSettings: the bids service's configuration (environment prefix BIDS_)."""

from __future__ import annotations

from datetime import timedelta

from marketplace_common.settings import ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from marketplace_bids.storage.retention import RetentionPolicy


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
    idempotency_retention_seconds: float = Field(default=7 * 86400, gt=0)
    """Idempotency records older than this are purged (default 7 days): a retry with
    the same request_id / event_id after that is treated as a new request."""
    delivery_token_retention_seconds: float = Field(default=86400, ge=0)
    """Delivery tokens expired for longer than this are purged (default 1 day)."""
    retention_interval_seconds: float = Field(default=3600, ge=0)
    """How often each replica tries a purge (one at a time across replicas on
    PostgreSQL, by an advisory lock); 0 turns the periodic purge off (then run
    ``bids-service purge``, e.g. from a CronJob)."""
    retention_batch_size: int = Field(default=1000, ge=1, le=100_000)
    """Rows deleted per batch, each batch its own short transaction."""

    def retention_policy(self) -> RetentionPolicy:
        return RetentionPolicy(
            idempotency_max_age=timedelta(seconds=self.idempotency_retention_seconds),
            delivery_token_grace=timedelta(seconds=self.delivery_token_retention_seconds),
            batch_size=self.retention_batch_size,
        )
