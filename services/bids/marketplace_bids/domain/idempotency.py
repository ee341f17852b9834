"""The bids service's idempotency keys (request_id, event_id), on the kit's mechanism.

A key's first use stores a fingerprint of the canonical request (method,
caller and every validated field) with the whole response, written in one
savepoint with the change (``marketplace_common.idempotency.IdempotencyKey``).
A repeat with the same fingerprint gets the stored response back; a different
request under the same key is IDEMPOTENCY_KEY_REUSED. Records are deleted after
``BIDS_IDEMPOTENCY_RETENTION_SECONDS`` (storage/retention.py).
"""

from __future__ import annotations

from marketplace_common.auth import Principal
from marketplace_common.idempotency import IdempotencyKey as IdempotencyKey
from marketplace_common.idempotency import model_codec as model_codec
from marketplace_common.idempotency import request_fingerprint
from pydantic import BaseModel

from marketplace_bids.domain.access import actor_name

#: Scopes of the idempotency records. All transitions share one scope, so an
#: event_id reused across RPCs is caught too (the method is in the fingerprint).
CREATE_TASK_SCOPE = "CreateTask"
PLACE_BID_SCOPE = "PlaceBid"
EVENT_SCOPE = "event"


def fingerprint(method: str, principal: Principal, request: BaseModel) -> str:
    """The kit's fingerprint of the canonical request: method, caller and the validated fields."""
    return request_fingerprint(method, actor_name(principal), request.model_dump(mode="json"))
