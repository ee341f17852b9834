"""Idempotency keys: one mechanism for both services (the SQL side is ``idempotency_sql``).

A key (``request_id``, ``event_id``) is first used with a request; its
fingerprint is stored, under a scope, with what the call answered, in the same
transaction (a savepoint) as the change the call made. A later call under the
same key with the same fingerprint is a repeat: it gets that answer back. With
another fingerprint it is ``IdempotencyKeyReusedError``. The fingerprint covers
the method, the caller (``auth.actor_name``: the same key from another
principal is never a repeat, so it never replays someone else's answer) and
every validated field of the request.

What is stored as the answer is the service's choice (a ``Codec``): bids stores
the whole response (``model_codec``), so a repeat gets the first call's answer
byte for byte; SubmitExecution stores the id of the execution it created
(``UUID_CODEC``), so a repeat gets back the resource the first call created, as
it is now.

This module is plain Python (the services' domains import it); the table, the
repository and the savepoint are in :mod:`marketplace_common.idempotency_sql`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from pydantic import BaseModel

from marketplace_common.errors import AgentError, ConflictError, IdempotencyKeyReusedError

__all__ = [
    "UUID_CODEC",
    "Codec",
    "DuplicateKeyError",
    "HasIdempotency",
    "IdempotencyKey",
    "IdempotencyRepository",
    "KeyedTransaction",
    "StoredResponse",
    "concurrent_write_error",
    "model_codec",
    "request_fingerprint",
]

R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)


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


class DuplicateKeyError(Exception):
    """A write hit a uniqueness rule (raised by a ``KeyedTransaction.savepoint``).

    ``key`` is the name of the violated constraint or index. Not an AgentError:
    the service decides what it means (a replay, BID_ALREADY_ACTIVE, ...).
    """

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key: {key}")
        self.key = key


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """An idempotency record: the request's fingerprint and the answer stored."""

    fingerprint: str
    response: bytes


class IdempotencyRepository(Protocol):
    """The records of one open transaction; ``add`` of a used key is a unique violation."""

    async def get(self, scope: str, key: str) -> StoredResponse | None: ...
    async def add(self, scope: str, key: str, record: StoredResponse) -> None: ...


class HasIdempotency(Protocol):
    """An open transaction's idempotency records (what ``IdempotencyKey.replay`` reads)."""

    @property
    def idempotency(self) -> IdempotencyRepository: ...


class KeyedTransaction(HasIdempotency, Protocol):
    """What ``IdempotencyKey.write_once`` needs of an open transaction."""

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A nested transaction that rolls back alone; a unique violation inside
        it comes out as DuplicateKeyError, leaving the outer transaction usable."""
        ...


@dataclass(frozen=True, slots=True)
class Codec(Generic[R]):
    """How an answer is stored: to bytes and back."""

    encode: Callable[[R], bytes]
    decode: Callable[[bytes], R]


def model_codec(model: type[M]) -> Codec[M]:
    """A pydantic model stored as its JSON."""
    return Codec(lambda value: value.model_dump_json().encode(), model.model_validate_json)


#: A resource's id stored as its text (``SubmitExecution`` stores the execution's id).
UUID_CODEC: Codec[uuid.UUID] = Codec(
    lambda value: str(value).encode(), lambda b: uuid.UUID(b.decode())
)


@dataclass(frozen=True, slots=True)
class IdempotencyKey(Generic[R]):
    """One use of an idempotency key: where it is stored and what it answers."""

    scope: str
    key: str
    fingerprint: str
    codec: Codec[R]
    field: str
    """The request field holding the key (named in IDEMPOTENCY_KEY_REUSED)."""

    async def replay(self, tx: HasIdempotency) -> R | None:
        """The stored answer if the key was used before with this request.

        None when the key is new; IdempotencyKeyReusedError when it was used
        with another request.
        """
        record = await tx.idempotency.get(self.scope, self.key)
        if record is None:
            return None
        if record.fingerprint != self.fingerprint:
            raise IdempotencyKeyReusedError(self.field, self.key)
        return self.codec.decode(record.response)

    async def write_once(
        self,
        tx: KeyedTransaction,
        result: R,
        write: Callable[[], Awaitable[None]],
        *,
        refusal: Callable[[DuplicateKeyError], AgentError | None] = lambda _dup: None,
    ) -> tuple[R, bool]:
        """Run ``write`` and store ``result`` under the key, in one savepoint.

        Returns ``(result, True)``. A unique violation means a concurrent twin
        committed first: the savepoint rolls back alone and the twin's stored
        answer is returned as ``(answer, False)`` (or IdempotencyKeyReusedError
        when the twin's request differs); when there is none, ``refusal(dup)``
        (e.g. BID_ALREADY_ACTIVE) or a retryable conflict is raised.
        """
        try:
            async with tx.savepoint():
                await write()
                record = StoredResponse(self.fingerprint, self.codec.encode(result))
                await tx.idempotency.add(self.scope, self.key, record)
        except DuplicateKeyError as dup:
            first = await self.replay(tx)
            if first is not None:
                return first, False
            raise (refusal(dup) or concurrent_write_error()) from None
        return result, True


def concurrent_write_error() -> ConflictError:
    """A uniqueness race that a retry of the whole call resolves."""
    return ConflictError(
        "a concurrent request wrote the same key; retry the call", retry_after=0.05
    )
