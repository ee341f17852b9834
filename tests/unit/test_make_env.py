"""scripts/make_env.py (``make env``): the env files it writes are accepted by the services'
own settings and authenticators, and it never replaces existing secrets silently."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from marketplace_bids.settings import BidsSettings
from marketplace_common.auth import Principal, Role, TokenAuthenticator
from marketplace_execution.settings import ExecutionSettings

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_env.py"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # -I: isolated mode, no site-packages of the project's venv on the path;
    # the script must work with a bare interpreter.
    return subprocess.run(
        [sys.executable, "-I", str(SCRIPT), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k: v for k, v in pairs if not k.startswith("#")}


def test_compose_env_is_accepted_by_both_services(tmp_path: Path) -> None:
    result = run(cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    env_file = tmp_path / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    env = read_env(env_file)
    bids = BidsSettings(_env_file=env_file)
    execution = ExecutionSettings(_env_file=env_file)
    bids_auth = TokenAuthenticator(bids.auth_tokens)
    execution_auth = TokenAuthenticator(execution.auth_tokens)
    assert execution.bids_token is not None
    service_token = execution.bids_token.get_secret_value()
    admin = env["MARKETPLACE_ADMIN_TOKEN"]
    assert bids_auth.authenticate_token(service_token) == Principal(Role.SERVICE, "execution")
    assert bids_auth.authenticate_token(admin) == Principal(Role.ADMIN, "ops")
    assert execution_auth.authenticate_token(admin) == Principal(Role.ADMIN, "ops")
    # The execution service does not accept its own outgoing token.
    assert execution_auth.authenticate_token(service_token) is None
    # Only hashes are configured for the servers: no raw token in *_AUTH_TOKENS.
    assert service_token not in env["BIDS_AUTH_TOKENS"]
    assert admin not in env["BIDS_AUTH_TOKENS"] + env["EXECUTION_AUTH_TOKENS"]


def test_existing_env_file_is_kept_unless_forced(tmp_path: Path) -> None:
    assert run(cwd=tmp_path).returncode == 0
    before = (tmp_path / ".env").read_text()
    again = run(cwd=tmp_path)
    assert again.returncode == 1
    assert "--force" in again.stderr
    assert (tmp_path / ".env").read_text() == before
    assert run("--force", cwd=tmp_path).returncode == 0
    assert (tmp_path / ".env").read_text() != before


def test_k8s_env_files_hold_each_service_its_own_settings(tmp_path: Path) -> None:
    out = tmp_path / "secrets"
    bids_url = "postgresql+asyncpg://bids:pw@db:5432/marketplace"
    execution_url = "postgresql+asyncpg://execution:pw@db:5432/marketplace_execution"
    args = ("--k8s", str(out), "--bids-database-url", bids_url)
    assert run(*args, cwd=tmp_path).returncode == 2  # both URLs are required
    result = run(*args, "--execution-database-url", execution_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    bids_env, execution_env = read_env(out / "bids.env"), read_env(out / "execution.env")
    assert all(name.startswith("BIDS_") for name in bids_env)
    assert all(name.startswith("EXECUTION_") for name in execution_env)
    bids = BidsSettings(_env_file=out / "bids.env")
    execution = ExecutionSettings(_env_file=out / "execution.env")
    assert (bids.database_url, execution.database_url) == (bids_url, execution_url)
    assert execution.bids_token is not None
    principal = TokenAuthenticator(bids.auth_tokens).authenticate_token(
        execution.bids_token.get_secret_value()
    )
    assert principal == Principal(Role.SERVICE, "execution")
    admin = (out / "admin-token").read_text().strip()
    assert TokenAuthenticator(execution.auth_tokens).authenticate_token(admin) is not None
