"""Request fingerprints: how both services tell a repeat of an idempotent call from a reuse.

A key (``request_id``, ``event_id``) is first used with a request; its
fingerprint is stored with what the call did. A later call under the same key
with the same fingerprint is a repeat (it gets that answer back); with another
fingerprint it is ``IdempotencyKeyReusedError``. The fingerprint covers the
method, the caller (``auth.actor_name``: the same key from another principal is
never a repeat, so it never replays someone else's answer) and every validated
field of the request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

__all__ = ["request_fingerprint"]


def request_fingerprint(method: str, actor: str, fields: Mapping[str, object]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``method``, ``actor`` and ``fields``.

    ``fields`` are the request's validated fields as JSON values
    (``model.model_dump(mode="json")``), without the key itself when a repeat
    may come with a fresh one.
    """
    canonical = json.dumps(
        {"method": method, "actor": actor, "request": dict(fields)},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
