"""Requests generated from the message descriptors never fault or hang (see conftest.py)."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import given
from hypothesis import strategies as st
from robustness_requests import HYPOTHESIS, requests_for, sweep
from robustness_support import CALLERS, EXECUTION, METHODS, Services, assert_healthy, check_call

pytestmark = pytest.mark.asyncio(loop_scope="package")


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@HYPOTHESIS
@given(data=st.data())
async def test_generated_requests_never_fault_or_hang(
    services: Services, method: MethodDescriptor, data: st.DataObject
) -> None:
    request = data.draw(requests_for(method.input_type), label="request")
    caller = data.draw(st.sampled_from(CALLERS), label="caller")
    await check_call(services, method, request.SerializeToString(), caller)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
async def test_every_field_edge_value_never_faults_or_hangs(
    services: Services, method: MethodDescriptor
) -> None:
    # Deterministic: each curated edge value in each field, as admin (past every
    # role check) and as the role the method is for, so nothing rests on luck.
    caller = "agent" if method.containing_service is EXECUTION else "admin"
    for request in sweep(method.input_type):
        for who in dict.fromkeys(["admin", caller]):
            await check_call(services, method, request.SerializeToString(), who)


async def test_services_still_healthy_after_generated_requests(services: Services) -> None:
    # Last in the module: every generated request above was sent (per backend) by now.
    await assert_healthy(services)
