"""Typed access to the trailing metadata of a failed grpc.aio call."""

from __future__ import annotations

import grpc.aio

STATUS_DETAILS_KEY = "grpc-status-details-bin"


def trailers(exc: grpc.aio.AioRpcError) -> dict[str, str | bytes]:
    """The trailing metadata of a failed aio call as a dict (the last value of each key).

    grpc-stubs types ``trailing_metadata()`` as the sync API's tuple of
    ``_Metadatum``; on grpc.aio it is a ``grpc.aio.Metadata`` (or None).
    """
    metadata: object = exc.trailing_metadata()
    if metadata is None:
        return {}
    assert isinstance(metadata, grpc.aio.Metadata), type(metadata)
    return dict(iter(metadata))


def status_details(exc: grpc.aio.AioRpcError) -> bytes | None:
    """The serialized ``google.rpc.Status`` a failed call carries, if any."""
    raw = trailers(exc).get(STATUS_DETAILS_KEY)
    assert raw is None or isinstance(raw, bytes), type(raw)
    return raw
