"""ExecutionSettings: the execution service's configuration (environment prefix EXECUTION_)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

from marketplace_common.auth import is_loopback_host
from marketplace_common.client import LoadBalancing
from marketplace_common.settings import ServiceSettings
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

LLMProviderName = Literal["offline", "openai"]
LLM_PROVIDERS: tuple[str, ...] = get_args(LLMProviderName)


class ProviderNotChosenError(ValueError):
    """A non-loopback bind with the LLM provider left to its default (offline)."""


class ModelLimitsSetting(BaseModel):
    """One model's limits in ``EXECUTION_LLM_LIMITS`` (unset fields take the defaults)."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=0, le=1000)


class ModelPriceSetting(BaseModel):
    """One model's prices in ``EXECUTION_LLM_PRICES``: USD per million tokens."""

    model_config = ConfigDict(extra="forbid")

    prompt: Decimal = Field(ge=0)
    completion: Decimal = Field(ge=0)


class ExecutionSettings(ServiceSettings):
    """Every setting, with the defaults of docs/design.md "Running"."""

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
    bids_max_in_flight: int = Field(default=32, ge=1, le=10_000)
    """Calls to BidService on the wire at once from this process; the rest wait
    their turn here, their deadline not yet running (api/bids_client.py)."""
    bids_tls: bool = False
    """TLS to BidService with the system's roots; a file below implies TLS."""
    bids_tls_ca_file: Path | None = None
    """The CA that signed BidService's certificate."""
    bids_tls_cert_file: Path | None = None
    """Our client certificate, for mutual TLS (with bids_tls_key_file)."""
    bids_tls_key_file: Path | None = None
    bids_tls_server_name: str | None = None
    """The name BidService's certificate carries, when not the target's host."""
    bids_load_balancing: LoadBalancing = "round_robin"
    """With a ``dns:///host:port`` target, round_robin spreads calls over every address."""

    # LLM
    llm_provider: LLMProviderName = "offline"
    """The default (offline: canned answers) only serves a loopback bind; anywhere
    else the provider must be set explicitly (:func:`check_llm_provider_chosen`)."""
    llm_base_url: str | None = None
    """None (or empty) means the provider's own endpoint."""
    llm_api_key: SecretStr | None = None
    llm_model: str = ""
    """The default model; empty means the provider's own default."""
    llm_allowed_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Models a caller may name in SubmitExecution and Complete, besides the default
    one (comma separated); empty: only the default model."""
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

    # Complete (the one-shot call): a quota per principal, counted in the database
    complete_calls_per_minute: int = Field(default=60, ge=0)
    """Complete calls per principal per UTC minute (0: no limit); admin is not counted."""
    complete_tokens_per_day: int = Field(default=1_000_000, ge=0)
    """LLM tokens (prompt + completion) of one principal's Complete calls per UTC day
    (0: no limit); admin is not counted."""

    # Pacing of LLM calls (this process)
    pacing_delay_seconds: float = Field(default=0.0, ge=0)
    pacing_jitter: float = Field(default=0.1, ge=0, le=1)
    pacing_max_concurrency: int | None = Field(default=None, ge=1)

    # Provider keys (provider + model), shared by every replica: docs/llm-limits.md
    pacing_requests_per_minute: int | None = Field(default=None, ge=1)
    """Each key's requests per minute, spread evenly; None for no limit."""
    pacing_tokens_per_minute: int | None = Field(default=None, ge=1)
    """Each key's tokens per minute (prompt estimate, then reported usage)."""
    pacing_burst: int = Field(default=0, ge=0, le=1000)
    """Calls beyond the even spacing an idle key lets through at once."""
    pacing_margin: float = Field(default=0.05, ge=0, le=1)
    """Every limit is kept this fraction slower than configured (timing slack)."""
    llm_limits: dict[str, ModelLimitsSetting] = Field(default_factory=dict)
    """Per-model limits (JSON: {"gpt-4o": {"requests_per_minute": 500}})."""
    llm_cooldown_base_seconds: float = Field(default=1.0, gt=0)
    llm_cooldown_max_seconds: float = Field(default=30.0, gt=0)
    llm_retry_budget_ratio: float = Field(default=0.2, ge=0, le=1)
    llm_retry_budget_window_seconds: float = Field(default=10.0, gt=0)
    llm_retry_budget_min_retries: int = Field(default=10, ge=0)
    llm_fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    """Model fallback chains (JSON: {"gpt-4o": ["gpt-4o-mini"]})."""
    llm_fallback_after_cooldown_seconds: float = Field(default=10.0, ge=0)
    llm_prices: dict[str, ModelPriceSetting] = Field(default_factory=dict)
    """USD per million tokens (JSON: {"gpt-4o": {"prompt": "2.50", "completion": "10"}})."""
    llm_cost_cap_usd: Decimal | None = Field(default=None, gt=0)
    """No LLM call of an execution starts once its calls cost this much; None: no cap."""

    # Workers
    workers: int = Field(default=16, ge=0, le=10_000)
    """Executions run at once by this process; 0 runs no worker pool (API only)."""
    lease_seconds: float = Field(default=30.0, gt=0)
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    """Lease renewal; also how soon a cancellation made through another replica is seen."""
    poll_seconds: float = Field(default=1.0, gt=0)
    queue_metrics_seconds: float = Field(default=5.0, ge=0)
    """How often the queue gauges (``execution_queue_depth``, ``..._oldest_age_seconds``)
    are read from the database; 0 turns them off."""
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

    @model_validator(mode="after")
    def _check_bids_tls(self) -> Self:
        if (self.bids_tls_cert_file is None) != (self.bids_tls_key_file is None):
            raise ValueError("bids_tls_cert_file and bids_tls_key_file go together")
        return self

    @property
    def bids_tls_enabled(self) -> bool:
        """True when the channel to BidService uses TLS."""
        return (
            self.bids_tls
            or self.bids_tls_ca_file is not None
            or self.bids_tls_cert_file is not None
        )

    @field_validator("llm_allowed_models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part for part in (p.strip() for p in value.split(",")) if part]
        return value

    @field_validator("llm_base_url", mode="before")
    @classmethod
    def _empty_url_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @property
    def llm_provider_chosen(self) -> bool:
        """True when ``llm_provider`` was set (environment or argument), not defaulted."""
        return "llm_provider" in self.model_fields_set


def check_llm_provider_chosen(settings: ExecutionSettings) -> None:
    """Refuse a non-loopback bind whose LLM provider was left to the default.

    A forgotten EXECUTION_LLM_PROVIDER must not "complete" paid tasks with the
    offline provider's canned text; on loopback (``make run``) the default stays.
    """
    if settings.llm_provider_chosen or is_loopback_host(settings.grpc_host):
        return
    choices = ", ".join(LLM_PROVIDERS)
    raise ProviderNotChosenError(
        f"refusing to listen on {settings.grpc_host!r} without a chosen LLM provider: "
        f"set EXECUTION_LLM_PROVIDER to one of {choices} "
        "(offline answers with canned text, for tests only), or bind to 127.0.0.1"
    )
