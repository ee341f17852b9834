"""Request values with no Python counterpart are the caller's mistake (INVALID_ARGUMENT).

Regressions found by tests/integration/robustness/: out-of-range
Timestamps/Durations and deeply nested page tokens used to escape validation
as ValueError/OverflowError/RecursionError, answered INTERNAL.
"""

from __future__ import annotations

import base64

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from marketplace.bids.v1 import bids_pb2
from marketplace_bids.api import convert
from marketplace_bids.domain import delivery as d
from marketplace_bids.domain import requests as r
from marketplace_common.errors import InvalidArgumentError
from marketplace_common.paging import InvalidPageTokenError, decode_page_token

TASK_ID = "6f1c1f3e-0000-4000-8000-000000000001"


@pytest.mark.parametrize(
    "stamp",
    [
        Timestamp(seconds=2**62),
        Timestamp(seconds=-(2**62)),
        Timestamp(seconds=0, nanos=-1),
        Timestamp(seconds=0, nanos=1_000_000_000),
        Timestamp(seconds=253_402_300_800),  # 10000-01-01
    ],
    ids=["huge", "very-negative", "negative-nanos", "nanos-overflow", "year-10000"],
)
def test_out_of_range_timestamp_names_its_field(stamp: Timestamp) -> None:
    request = bids_pb2.ListTasksRequest(created_after=stamp, page_size=-1)
    with pytest.raises(InvalidArgumentError) as caught:
        r.parse(r.ListTasksRequest, convert.request_fields(request))
    assert {v.field for v in caught.value.violations} == {"created_after", "page_size"}


def test_timestamps_at_the_edges_of_the_range_are_accepted() -> None:
    request = bids_pb2.ListTasksRequest(
        created_after=Timestamp(seconds=-62_135_596_800),  # 0001-01-01
        created_before=Timestamp(seconds=253_402_300_799, nanos=999_999_999),
    )
    parsed = r.parse(r.ListTasksRequest, convert.request_fields(request))
    assert parsed.created_after is not None
    assert parsed.created_after.year == 1


@pytest.mark.parametrize(
    "ttl",
    [
        Duration(seconds=2**62),
        Duration(seconds=-(2**62)),
        Duration(seconds=1, nanos=-(10**9)),
        Duration(seconds=5, nanos=-5),
        Duration(seconds=-5, nanos=5),
    ],
    ids=["huge", "very-negative", "nanos-overflow", "mixed-signs", "mixed-signs-negative"],
)
def test_out_of_range_duration_names_its_field(ttl: Duration) -> None:
    request = bids_pb2.CreateDeliveryTokenRequest(task_id=TASK_ID, ttl=ttl)
    with pytest.raises(InvalidArgumentError) as caught:
        r.parse(d.DeliveryTokenRequest, convert.request_fields(request))
    assert [v.field for v in caught.value.violations] == ["ttl"]


@pytest.mark.parametrize("payload", [b"[" * 1500, b'{"t":' * 1500], ids=["array", "object"])
def test_deeply_nested_page_token_is_malformed(payload: bytes) -> None:
    token = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    with pytest.raises(InvalidPageTokenError):
        decode_page_token(token, "filters")
