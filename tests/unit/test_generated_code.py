"""The committed generated code in libs/proto is exactly what proto/ generates."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _files(base: Path) -> set[str]:
    return {
        str(p.relative_to(base))
        for p in base.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_regenerating_the_protos_changes_nothing(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    committed = ROOT / "libs" / "proto"
    fresh, old = _files(tmp_path), _files(committed)
    assert fresh == old, "protos changed: run `make proto` and commit libs/proto"
    changed = [
        f for f in sorted(fresh) if not filecmp.cmp(tmp_path / f, committed / f, shallow=False)
    ]
    assert changed == [], f"protos changed: run `make proto` and commit libs/proto ({changed})"


def test_every_rpc_of_the_contract_is_generated() -> None:
    from marketplace.bids.v1 import bids_pb2
    from marketplace.execution.v1 import execution_pb2

    bids = {m.name for m in bids_pb2.DESCRIPTOR.services_by_name["BidService"].methods}
    execution = {
        m.name for m in execution_pb2.DESCRIPTOR.services_by_name["ExecutionService"].methods
    }
    assert bids == {
        "CreateTask", "GetTask", "ListTasks", "PlaceBid", "GetBid", "ListBids",
        "WithdrawBid", "AcceptBid", "RejectBid", "ListBidEvents", "StartTask",
        "CompleteTask", "FailTask", "CreateDeliveryToken", "GetDelivery", "ListTaskEvents",
        "RevokeDeliveryToken",
    }  # fmt: skip
    assert execution == {
        "SubmitExecution", "GetExecution", "ListExecutions", "WatchExecution",
        "CancelExecution", "Complete",
    }  # fmt: skip
