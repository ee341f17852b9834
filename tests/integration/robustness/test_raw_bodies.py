"""Raw bodies, protobuf or not, never fault or hang (see conftest.py)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import given, settings
from hypothesis import strategies as st
from robustness_requests import HYPOTHESIS
from robustness_support import (
    CALLERS,
    METHODS,
    Services,
    assert_healthy,
    check_call,
    invoke,
    status_details,
)

pytestmark = pytest.mark.asyncio(loop_scope="package")


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@settings(HYPOTHESIS, max_examples=15)
@given(body=st.binary(max_size=512), caller=st.sampled_from(CALLERS))
async def test_raw_bodies_never_fault_or_hang(
    services: Services, method: MethodDescriptor, body: bytes, caller: str
) -> None:
    # Random bytes are often a valid message by chance (protobuf is permissive):
    # those are ordinary requests; the rest must be INVALID_ARGUMENT.
    await check_call(services, method, body, caller)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
async def test_undecodable_body_is_invalid_argument(
    services: Services, method: MethodDescriptor
) -> None:
    # grpc.aio alone answers UNKNOWN here (DecodeError before any handler code);
    # the kit's error mapping decodes leniently and names the "request" field.
    error, _ = await invoke(services, method, b"\xff\xff\xff\xff", "admin")
    assert error is not None
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert status_details(error) == (1, ["request"])


async def test_services_still_healthy_after_raw_bodies(services: Services) -> None:
    # Last in the module: every raw body above was sent (per backend) by now.
    await assert_healthy(services)
