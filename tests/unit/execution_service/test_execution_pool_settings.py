"""The engine pool's size: derived from workers unless EXECUTION_DB_POOL_SIZE says."""

from __future__ import annotations

import pytest
from marketplace_execution.settings import ExecutionSettings


@pytest.mark.parametrize(("workers", "expected"), [(0, 5), (4, 5), (16, 16), (1000, 20)])
def test_pool_size_defaults_to_workers_between_5_and_20(workers: int, expected: int) -> None:
    assert ExecutionSettings(workers=workers).effective_db_pool_size == expected


def test_pool_size_setting_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECUTION_DB_POOL_SIZE", "50")
    assert ExecutionSettings(workers=1000).effective_db_pool_size == 50
