"""The kit's idempotency keys, generic over what is stored (no database)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
from marketplace_common.errors import ConflictError, IdempotencyKeyReusedError, NotFoundError
from marketplace_common.idempotency import (
    UUID_CODEC,
    DuplicateKeyError,
    IdempotencyKey,
    StoredResponse,
    model_codec,
)
from pydantic import BaseModel


class Answer(BaseModel):
    value: int


class Records:
    """The records of a pretend transaction; ``taken`` keys belong to a committed twin."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], StoredResponse] = {}
        self.taken: dict[tuple[str, str], StoredResponse] = {}

    async def get(self, scope: str, key: str) -> StoredResponse | None:
        return self.rows.get((scope, key))

    async def add(self, scope: str, key: str, record: StoredResponse) -> None:
        if (scope, key) in self.rows:
            raise DuplicateKeyError("pk_idempotency_keys")
        if (scope, key) in self.taken:
            self.rows[scope, key] = self.taken[scope, key]  # visible once we collide
            raise DuplicateKeyError("pk_idempotency_keys")
        self.rows[scope, key] = record


class Tx:
    def __init__(self) -> None:
        self.idempotency = Records()
        self.writes: list[str] = []

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        @asynccontextmanager
        async def nested() -> AsyncIterator[None]:
            before = list(self.writes)
            try:
                yield
            except DuplicateKeyError:
                self.writes[:] = before  # rolled back alone
                raise

        return nested()


def test_codecs_round_trip() -> None:
    ident = uuid.uuid4()
    assert UUID_CODEC.decode(UUID_CODEC.encode(ident)) == ident
    assert UUID_CODEC.encode(ident) == str(ident).encode()
    codec = model_codec(Answer)
    assert codec.decode(codec.encode(Answer(value=7))) == Answer(value=7)


async def test_first_use_writes_then_a_repeat_replays_and_a_reuse_is_refused() -> None:
    tx = Tx()
    key = IdempotencyKey("S", "k1", "f" * 64, UUID_CODEC, "request_id")
    first = uuid.uuid4()

    async def write() -> None:
        tx.writes.append("row")

    assert await key.replay(tx) is None
    assert await key.write_once(tx, first, write) == (first, True)
    assert tx.writes == ["row"]
    assert await key.replay(tx) == first
    other = IdempotencyKey("S", "k1", "0" * 64, UUID_CODEC, "request_id")
    with pytest.raises(IdempotencyKeyReusedError) as refused:
        await other.replay(tx)
    assert refused.value.reason == "IDEMPOTENCY_KEY_REUSED"
    assert [v.field for v in refused.value.violations] == ["request_id"]


async def test_a_twin_that_committed_first_answers_and_the_write_rolls_back() -> None:
    tx = Tx()
    twin = Answer(value=1)
    key = IdempotencyKey("S", "k", "f" * 64, model_codec(Answer), "event_id")
    tx.idempotency.taken["S", "k"] = StoredResponse("f" * 64, twin.model_dump_json().encode())

    async def write() -> None:
        tx.writes.append("row")

    assert await key.write_once(tx, Answer(value=2), write) == (twin, False)
    assert tx.writes == []


async def test_a_collision_without_a_twins_key_is_the_refusal_or_a_conflict() -> None:
    key = IdempotencyKey("S", "k", "f" * 64, UUID_CODEC, "request_id")

    async def collide() -> None:
        raise DuplicateKeyError("uq_busy")

    with pytest.raises(NotFoundError):
        await key.write_once(Tx(), uuid.uuid4(), collide, refusal=lambda _d: NotFoundError("x"))
    with pytest.raises(ConflictError):
        await key.write_once(Tx(), uuid.uuid4(), collide)
