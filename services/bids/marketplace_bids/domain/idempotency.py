"""Idempotency keys (request_id, event_id): fingerprints and stored responses.

A key's first use stores a fingerprint of the canonical request (method,
caller and every validated field) with the response. A repeat with the same
fingerprint gets the stored response back; a different request under the
same key is IDEMPOTENCY_KEY_REUSED.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from marketplace_common.auth import Principal
from marketplace_common.errors import AgentError, ConflictError, IdempotencyKeyReusedError
from marketplace_common.idempotency import request_fingerprint
from pydantic import BaseModel

from marketplace_bids.domain.access import actor_name
from marketplace_bids.domain.ports import DuplicateKeyError, Repositories, StoredResponse

R = TypeVar("R", bound=BaseModel)

#: Scopes of the idempotency records. All transitions share one scope, so an
#: event_id reused across RPCs is caught too (the method is in the fingerprint).
CREATE_TASK_SCOPE = "CreateTask"
PLACE_BID_SCOPE = "PlaceBid"
EVENT_SCOPE = "event"


def fingerprint(method: str, principal: Principal, request: BaseModel) -> str:
    """The kit's fingerprint of the canonical request: method, caller and the validated fields."""
    return request_fingerprint(method, actor_name(principal), request.model_dump(mode="json"))


def stored(fingerprint_: str, response: BaseModel) -> StoredResponse:
    """The record to store for a first use of a key."""
    return StoredResponse(fingerprint_, response.model_dump_json().encode())


async def replay(
    repos: Repositories,
    scope: str,
    key: str,
    fingerprint_: str,
    result_type: type[R],
    field: str,
) -> R | None:
    """The stored response for ``key`` if it was used before with this request.

    None when the key is new; IdempotencyKeyReusedError when it was used with
    another request.
    """
    record = await repos.idempotency.get(scope, key)
    if record is None:
        return None
    if record.fingerprint != fingerprint_:
        raise IdempotencyKeyReusedError(field, key)
    return result_type.model_validate_json(record.response)


@dataclass(frozen=True, slots=True)
class IdempotencyKey(Generic[R]):
    """One use of an idempotency key: where it is stored and what it answers."""

    scope: str
    key: str
    fingerprint: str
    result_type: type[R]
    field: str
    """The request field holding the key (named in IDEMPOTENCY_KEY_REUSED)."""

    async def replay(self, repos: Repositories) -> R | None:
        """The stored answer if the key was used before with this request (see ``replay``)."""
        return await replay(
            repos, self.scope, self.key, self.fingerprint, self.result_type, self.field
        )

    async def write_once(
        self,
        repos: Repositories,
        result: R,
        write: Callable[[], Awaitable[None]],
        *,
        refusal: Callable[[DuplicateKeyError], AgentError | None] = lambda _dup: None,
    ) -> tuple[R, bool]:
        """Run ``write`` and store ``result`` under the key, in one savepoint.

        Returns ``(result, True)``. A unique violation means a concurrent twin
        committed first: the savepoint rolls back alone and its stored answer
        is returned as ``(answer, False)``; when there is none, ``refusal(dup)``
        (e.g. BID_ALREADY_ACTIVE) or a retryable conflict is raised.
        """
        try:
            async with repos.savepoint():
                await write()
                await repos.idempotency.add(self.scope, self.key, stored(self.fingerprint, result))
        except DuplicateKeyError as dup:
            first = await self.replay(repos)
            if first is not None:
                return first, False
            raise (refusal(dup) or concurrent_write_error()) from None
        return result, True


def concurrent_write_error() -> ConflictError:
    """A uniqueness race that a retry of the whole call resolves."""
    return ConflictError(
        "a concurrent request wrote the same key; retry the call", retry_after=0.05
    )
