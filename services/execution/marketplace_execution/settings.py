"""ExecutionSettings: the execution service's configuration (environment prefix EXECUTION_)."""

from __future__ import annotations

from typing import Literal, Self

from marketplace_common.settings import ServiceSettings
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict


class ExecutionSettings(ServiceSettings):
    """Every setting, with the defaults of contracts.md "Running"."""

    model_config = SettingsConfigDict(
        env_prefix="EXECUTION_", extra="ignore", validate_default=True, hide_input_in_errors=True
    )

    grpc_port: int = Field(default=50052, ge=0, le=65535)
    metrics_port: int = Field(default=9102, ge=0, le=65535)
    database_url: str = Field(default="sqlite+aiosqlite:///./var/execution.db", repr=False)

    # BidService
    bids_target: str = "127.0.0.1:50051"
    bids_token: SecretStr | None = None
    """A raw token with role service, sent as ``authorization: Bearer``."""
    bids_timeout_seconds: float = Field(default=5.0, gt=0)

    # LLM
    llm_provider: Literal["offline", "openai"] = "offline"
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str = ""
    """The default model; empty means the provider's own default."""
    llm_timeout_seconds: float = Field(default=60.0, gt=0)
    llm_max_llm_fixable_attempts: int = Field(default=3, ge=1, le=10)
    llm_deadline_seconds: float = Field(default=300.0, gt=0)
    llm_backoff_base_seconds: float = Field(default=0.5, gt=0)
    llm_backoff_max_seconds: float = Field(default=30.0, gt=0)
    llm_offline_latency_seconds: float = Field(default=0.0, ge=0)
    llm_offline_transient_rate: float = Field(default=0.0, ge=0, le=1)
    llm_offline_rate_limited_rate: float = Field(default=0.0, ge=0, le=1)
    llm_offline_permanent_rate: float = Field(default=0.0, ge=0, le=1)
    llm_offline_malformed_rate: float = Field(default=0.0, ge=0, le=1)
    llm_offline_seed: int = 0

    # Pacing of LLM calls
    pacing_delay_seconds: float = Field(default=0.0, ge=0)
    pacing_jitter: float = Field(default=0.1, ge=0, le=1)
    pacing_max_concurrency: int | None = Field(default=None, ge=1)
    pacing_requests_per_minute: int | None = Field(default=None, ge=1)

    # Workers
    workers: int = Field(default=16, ge=0, le=10_000)
    """Executions run at once by this process; 0 runs no worker pool (API only)."""
    lease_seconds: float = Field(default=30.0, gt=0)
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    """Lease renewal; also how soon a cancellation made through another replica is seen."""
    poll_seconds: float = Field(default=1.0, gt=0)
    db_pool_size: int | None = Field(default=None, ge=1, le=1000)
    """Pooled database connections (plus 10 overflow). None: ``min(max(workers, 5), 20)``.

    More workers do not need more connections: on SQLite write transactions
    queue in the process for the single write lock and hold one connection
    at a time (reads take the others), and on either backend the event loop's
    CPU, not the pool, bounds the transactions per second long before 20
    connections. Raise it on PostgreSQL when the log shows
    ``execution.store_retry`` with reason DATABASE_UNAVAILABLE (checkout
    timeouts, retried while the lease is held) or API reads queue, and keep
    replicas x (db_pool_size + 10) under PostgreSQL's max_connections."""

    @property
    def effective_db_pool_size(self) -> int:
        """``db_pool_size``, or the default derived from ``workers``."""
        return self.db_pool_size or min(max(self.workers, 5), 20)

    watch_poll_seconds: float = Field(default=1.0, gt=0)
    cancel_wait_seconds: float = Field(default=5.0, ge=0)

    @model_validator(mode="after")
    def _check_lease(self) -> Self:
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError("heartbeat_seconds must be below lease_seconds")
        return self
