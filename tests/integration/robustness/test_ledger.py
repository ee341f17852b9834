"""The "changes nothing" check the robustness tests rest on (see conftest.py)."""

from __future__ import annotations

import pytest
from marketplace.bids.v1 import bids_pb2
from marketplace.common.v1 import common_pb2
from robustness_support import ALICE, BY_NAME, Services, invoke, new_id

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_ledger_notices_a_change_by_a_call_that_may_not_change_anything(
    services: Services,
) -> None:
    # The checker itself: a write the ledger is told to forbid must fail it.
    request = bids_pb2.CreateTaskRequest(
        request_id=new_id(), client_email=ALICE, title="t",
        budget=common_pb2.Money(currency_code="EUR", units=1),
    )  # fmt: skip
    error, _ = await invoke(services, BY_NAME["CreateTask"], request.SerializeToString(), "client")
    assert error is None
    with pytest.raises(AssertionError, match=r"changed tables .*'tasks': \(\(\d+"):
        await services.ledger.after("CreateTask told to change nothing", may_change=False)
    await services.ledger.rebase()
