"""Create the secrets of a deployment as env files (`make env`); standard library only.

Runs with any Python 3.11+, no virtualenv and no image needed:

    python3 scripts/make_env.py                      # ./.env for docker compose (+ DB password)
    python3 scripts/make_env.py --k8s deploy/k8s/overlays/prod/secrets \\
        --bids-database-url postgresql+asyncpg://bids:PASSWORD@db:5432/marketplace \\
        --execution-database-url postgresql+asyncpg://execution:PASSWORD@db:5432/marketplace_execution

It makes two fresh 256-bit tokens: the execution service's token for the bids
service (role ``service``) and an operator's token (role ``admin``, subject
``ops``) accepted by both services. The services get only the hashes
(``*_AUTH_TOKENS``); the execution service also gets its own raw token
(``EXECUTION_BIDS_TOKEN``), which it sends to bids. The operator's raw token
is written as ``MARKETPLACE_ADMIN_TOKEN`` in the compose ``.env`` (no service
reads it; it is there for grpcurl) and, for Kubernetes, in ``admin-token``
next to the two env files, never into a Secret.

Existing files are kept unless ``--force`` is given: new tokens lock out
every caller holding the old ones. Files are created readable by the owner
only. The hash format is the services' own (``sha256:<hex>=<role>:<subject>``,
see marketplace_common.auth); a test checks that both agree.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import sys
from pathlib import Path

SERVICE_SUBJECT = "execution"
ADMIN_SUBJECT = "ops"


def new_token() -> str:
    """A fresh random token, 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


def entry(token: str, role: str, subject: str) -> str:
    """The configured (hashed) form of a token: ``sha256:<hex>=<role>:<subject>``."""
    return f"sha256:{hashlib.sha256(token.encode()).hexdigest()}={role}:{subject}"


def secret_values(service_token: str, admin_token: str) -> dict[str, dict[str, str]]:
    """The settings each service needs, by service."""
    admin = entry(admin_token, "admin", ADMIN_SUBJECT)
    return {
        "bids": {"BIDS_AUTH_TOKENS": f"{entry(service_token, 'service', SERVICE_SUBJECT)},{admin}"},
        "execution": {"EXECUTION_AUTH_TOKENS": admin, "EXECUTION_BIDS_TOKEN": service_token},
    }


def _write(path: Path, lines: list[str], *, force: bool) -> None:
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; keep it, or pass --force to replace its tokens")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)


def write_compose_env(path: Path, *, force: bool) -> None:
    """One ``.env`` holding both services' settings and the operator's token."""
    service_token, admin_token = new_token(), new_token()
    values = secret_values(service_token, admin_token)
    lines = ["# Made by scripts/make_env.py (make env). Secret: do not commit."]
    # The compose PostgreSQL's password (docker-compose.yml builds the database URLs).
    lines.append(f"POSTGRES_PASSWORD={secrets.token_hex(16)}")
    for settings in values.values():
        lines += [f"{name}={value}" for name, value in settings.items()]
    lines.append("# The operator's raw token (role admin), for grpcurl; no service reads it.")
    lines.append(f"MARKETPLACE_ADMIN_TOKEN={admin_token}")
    _write(path, lines, force=force)


def write_k8s_env(directory: Path, database_urls: dict[str, str], *, force: bool) -> None:
    """``bids.env`` and ``execution.env`` for kustomize's secretGenerator, ``admin-token``."""
    service_token, admin_token = new_token(), new_token()
    values = secret_values(service_token, admin_token)
    for service, settings in values.items():
        prefix = service.upper()
        lines = [f"# Made by scripts/make_env.py: the Secret of the {service} service."]
        lines += [f"{name}={value}" for name, value in settings.items()]
        lines.append(f"{prefix}_DATABASE_URL={database_urls[service]}")
        _write(directory / f"{service}.env", lines, force=force)
    _write(directory / "admin-token", [admin_token], force=force)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make_env.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--out", type=Path, default=Path(".env"), help="compose env file")
    parser.add_argument(
        "--k8s", type=Path, metavar="DIR", help="write DIR/bids.env, DIR/execution.env instead"
    )
    parser.add_argument("--bids-database-url", help="with --k8s: BIDS_DATABASE_URL")
    parser.add_argument("--execution-database-url", help="with --k8s: EXECUTION_DATABASE_URL")
    parser.add_argument("--force", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    try:
        if args.k8s is None:
            write_compose_env(args.out, force=args.force)
            print(f"wrote {args.out}")
            return 0
        if not (args.bids_database_url and args.execution_database_url):
            parser.error("--k8s needs --bids-database-url and --execution-database-url")
        urls = {"bids": args.bids_database_url, "execution": args.execution_database_url}
        write_k8s_env(args.k8s, urls, force=args.force)
    except FileExistsError as exc:
        print(f"make_env.py: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.k8s}/bids.env, {args.k8s}/execution.env and {args.k8s}/admin-token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
