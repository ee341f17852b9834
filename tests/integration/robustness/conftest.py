"""Robustness: no request can crash, hang, answer INTERNAL or change anything it should not.

Both services run in-process (port 0, bearer tokens), the execution service
wired to the real bids service, once on SQLite and once on PostgreSQL (two
fresh databases; marked ``postgres``): one pair of servers per backend for
the whole folder (``services``, package scope), so every module's calls land
on the same databases and the same ledger.

- test_generated_requests: for every RPC, Hypothesis generates requests from
  the message descriptors (robustness_requests), sent as a random caller, and
  every curated edge value goes into every field.
- test_raw_bodies: bodies that are not protobuf (or are, by chance) through a
  generic channel with identity serializers.
- test_refused_requests and test_real_object_fields: real objects (tasks in
  every state, bids in every state, a delivery token, executions run by the
  worker; robustness_world) get bad requests: transitions from the wrong
  state, reused idempotency keys with other bodies, wrong principals, valid
  and invalid fields mixed, every field swapped for edge values (and for other
  spellings of real ids, and ids of other objects).
- test_ledger: the "changes nothing" check itself.

Every call is checked by robustness_support.call: it ends within its deadline
with a code other than INTERNAL, UNKNOWN or DATA_LOSS; every error carries
exactly one ErrorInfo, and INVALID_ARGUMENT a BadRequest with at least one
field violation. A call that fails, succeeds on a read-only method or replays
an idempotent one must leave every table of both databases as it was (the
:class:`~table_ledger.Ledger`: a cheap change marker per call, row counts and
digests only when it moved). Both services must still answer health after
each module. Examples are bounded and derandomized (the same run every time);
the folder takes about a minute for both backends.

Each test module sets ``pytestmark = pytest.mark.asyncio(loop_scope="package")``:
its tests run in the event loop the package-scoped servers live in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from robustness_support import Services, databases, running_services
from robustness_world import World


@pytest.fixture(
    scope="package", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def backend(request: pytest.FixtureRequest) -> str | None:
    """None for SQLite, else the PostgreSQL server's URL (resolved outside the event loop)."""
    if request.param == "sqlite":
        return None
    server: str = request.getfixturevalue("postgres_server_url")
    return server


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def services(
    backend: str | None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Services]:
    """Both services on fresh databases of ``backend``, for every module of the folder."""
    base = tmp_path_factory.mktemp("robustness")
    async with databases(backend, base) as urls, running_services(*urls) as running:
        yield running
        # Shown with -s: what every call of the folder (on this backend) ended with.
        total = sum(running.codes.values())
        print(f"robustness: {total} calls by code {dict(running.codes)}; "
              f"{running.ledger.unchanged} checked to change nothing, "
              f"{running.ledger.digests} table digests")  # fmt: skip


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def world(services: Services) -> World:
    """Real objects made through the public API, shared by the modules that need them."""
    return World(services)
