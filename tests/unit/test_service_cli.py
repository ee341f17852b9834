"""The shared console-script behaviour: refusals exit 2 with a plain message."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import structlog
from marketplace_bids import cli as bids_cli
from marketplace_execution import cli as execution_cli


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    # main() points logging at sys.stderr, which is capsys's stream in some tests and
    # closed after them: a later test's (or fixture's) log line must not write there.
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_marketplace_handler", False):
            root.removeHandler(handler)


@pytest.mark.parametrize(
    ("main", "env"),
    [(bids_cli.main, "BIDS_GRPC_PORT"), (execution_cli.main, "EXECUTION_GRPC_PORT")],
)
def test_invalid_settings_exit_2_naming_the_setting(
    main: Callable[[Sequence[str]], int],
    env: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(env, "not-a-port")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "invalid settings" in err
    assert "grpc_port" in err


def test_protected_mode_refuses_to_serve_on_a_public_address_without_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BIDS_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'bids.db'}")
    monkeypatch.setenv("BIDS_GRPC_HOST", "0.0.0.0")
    monkeypatch.setenv("BIDS_GRPC_PORT", "0")
    monkeypatch.setenv("BIDS_METRICS_PORT", "0")
    monkeypatch.delenv("BIDS_AUTH_TOKENS", raising=False)
    assert bids_cli.main(["serve", "--migrate"]) == 2
    err = capsys.readouterr().err
    assert "protected mode" in err
    assert "BIDS_AUTH_TOKENS" in err


def test_migrate_creates_the_database_and_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXECUTION_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'e.db'}")
    assert execution_cli.main(["migrate"]) == 0
    assert (tmp_path / "e.db").exists()


@pytest.mark.parametrize("count", ["0", "65", "two"])
def test_workers_out_of_range_is_a_usage_error(
    count: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        bids_cli.main(["serve", "--workers", count])
    assert info.value.code == 2
    assert "--workers" in capsys.readouterr().err


def test_workers_flag_overrides_the_processes_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # PROCESSES=1 in the environment, --workers 2 on the command line: the flag wins,
    # and two processes on SQLite are refused before anything is opened.
    monkeypatch.setenv("EXECUTION_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'e.db'}")
    monkeypatch.setenv("EXECUTION_PROCESSES", "1")
    monkeypatch.setenv("EXECUTION_GRPC_PORT", "0")
    assert execution_cli.main(["serve", "--workers", "2"]) == 2
    assert "2 server processes need PostgreSQL" in capsys.readouterr().err
    assert not (tmp_path / "e.db").exists()
