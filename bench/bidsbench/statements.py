"""The bids service's SQL, as its engine sends it to PostgreSQL (asyncpg dialect).

Captured by compiling the repositories' statements with SQLAlchemy's asyncpg
dialect, so the raw-asyncpg side and the bare server run what the service
runs, statement for statement.
"""

from __future__ import annotations

_BID_COLUMNS = (
    "bids.bid_id, bids.marketplace, bids.job_id, bids.agent_id, bids.amount_currency, "
    "bids.amount_units, bids.amount_nanos, bids.proposal, bids.status, bids.created_at, "
    "bids.updated_at"
)
SET_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', '5000', true)"
SELECT_BID = f"SELECT {_BID_COLUMNS} FROM bids WHERE bids.bid_id = $1::VARCHAR"
SELECT_BID_LOCKED = f"{SELECT_BID} FOR NO KEY UPDATE"
SELECT_PENDING = (
    f"SELECT {_BID_COLUMNS} FROM bids WHERE bids.marketplace = $1::VARCHAR AND "
    "bids.job_id = $2::VARCHAR AND bids.agent_id = $3::VARCHAR AND bids.status = 'PENDING'"
)
LIST_BIDS_BY_AGENT = (
    f"SELECT {_BID_COLUMNS} FROM bids WHERE bids.agent_id = $1::VARCHAR "
    "ORDER BY bids.created_at DESC, bids.bid_id DESC LIMIT $2::INTEGER"
)
SELECT_KEY = (
    "SELECT idempotency_keys.fingerprint, idempotency_keys.response FROM idempotency_keys "
    "WHERE idempotency_keys.scope = $1::VARCHAR AND idempotency_keys.key = $2::VARCHAR"
)
UPDATE_BID = (
    "UPDATE bids SET status=$1::VARCHAR, updated_at=$2::TIMESTAMP WITH TIME ZONE "
    "WHERE bids.bid_id = $3::VARCHAR"
)
INSERT_BID = (
    "INSERT INTO bids (bid_id, marketplace, job_id, agent_id, amount_currency, amount_units, "
    "amount_nanos, proposal, status, created_at, updated_at) VALUES ($1::VARCHAR, $2::VARCHAR, "
    "$3::VARCHAR, $4::VARCHAR, $5::VARCHAR, $6::BIGINT, $7::INTEGER, $8::VARCHAR, $9::VARCHAR, "
    "$10::TIMESTAMP WITH TIME ZONE, $11::TIMESTAMP WITH TIME ZONE)"
)
INSERT_EVENT = (
    "INSERT INTO bid_events (event_id, bid_id, previous_status, new_status, reason, actor, "
    "created_at) VALUES ($1::VARCHAR, $2::VARCHAR, $3::VARCHAR, $4::VARCHAR, $5::VARCHAR, "
    "$6::VARCHAR, $7::TIMESTAMP WITH TIME ZONE)"
)
INSERT_KEY = (
    "INSERT INTO idempotency_keys (scope, key, fingerprint, response, created_at) VALUES "
    "($1::VARCHAR, $2::VARCHAR, $3::VARCHAR, $4::BYTEA, $5::TIMESTAMP WITH TIME ZONE)"
)
