"""clients/service_config.json: valid per gRFC A6, true to the contracts, and what a channel does.

The config is what clients in any language load for retries and timeouts
(docs/clients.md). Here a grpc channel loads it: against the real bids
service, and against a server that answers UNAVAILABLE on purpose, to see
the retry policy and the timeouts take effect method by method.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bids_support
import grpc
import grpc.aio
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from marketplace.bids.v1 import bids_pb2, bids_pb2_grpc
from marketplace.execution.v1 import execution_pb2

ROOT = Path(__file__).resolve().parents[2]
CONFIG_PATH = ROOT / "clients" / "service_config.json"
SERVICES = {
    d.full_name: d
    for d in (
        bids_pb2.DESCRIPTOR.services_by_name["BidService"],
        execution_pb2.DESCRIPTOR.services_by_name["ExecutionService"],
    )
}
# google.protobuf.Duration in JSON: seconds with up to 9 fractional digits and an "s".
DURATION = re.compile(r"^\d+(\.\d{1,9})?s$")
STATUS_CODES = {code.name for code in grpc.StatusCode}
TOP_LEVEL = {"loadBalancingConfig", "methodConfig", "retryThrottling"}
METHOD_CONFIG_KEYS = {"name", "timeout", "retryPolicy", "waitForReady"}
RETRY_POLICY_KEYS = {
    "maxAttempts",
    "initialBackoff",
    "maxBackoff",
    "backoffMultiplier",
    "retryableStatusCodes",
}
IDEMPOTENCY_KEYS = ("request_id", "event_id")
READS = ("Get", "List", "Watch")


def _config() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(CONFIG_PATH.read_text())
    return loaded


def _seconds(duration: str) -> float:
    assert DURATION.match(duration), duration
    return float(duration[:-1])


def a6_violations(config: dict[str, Any]) -> list[str]:
    """What breaks gRFC A6 (and the service config's JSON form) in ``config``."""
    bad: list[str] = [f"unknown top-level key {k}" for k in set(config) - TOP_LEVEL]
    seen: set[tuple[str, str]] = set()
    for index, entry in enumerate(config.get("methodConfig", [])):
        where = f"methodConfig[{index}]"
        bad += [f"{where}: unknown key {k}" for k in set(entry) - METHOD_CONFIG_KEYS]
        if not entry.get("name"):
            bad.append(f"{where}: no name")
        for name in entry.get("name", []):
            key = (name.get("service", ""), name.get("method", ""))
            if not key[0] or set(name) - {"service", "method"}:
                bad.append(f"{where}: name {name} needs a service (and at most a method)")
            if key in seen:
                bad.append(f"{where}: name {name} appears twice")
            seen.add(key)
        if "timeout" in entry and not (
            DURATION.match(entry["timeout"]) and _seconds(entry["timeout"]) > 0
        ):
            bad.append(f"{where}: timeout {entry['timeout']!r}")
        if "retryPolicy" in entry:
            bad += [
                f"{where}.retryPolicy: {v}" for v in _retry_policy_violations(entry["retryPolicy"])
            ]
    throttling = config.get("retryThrottling")
    if throttling is not None:
        max_tokens, ratio = throttling.get("maxTokens"), throttling.get("tokenRatio")
        if not (isinstance(max_tokens, int | float) and 0 < max_tokens <= 1000):
            bad.append(f"retryThrottling.maxTokens {max_tokens!r} not in (0, 1000]")
        if not (isinstance(ratio, int | float) and ratio > 0 and round(ratio, 3) == ratio):
            bad.append(f"retryThrottling.tokenRatio {ratio!r}: above 0, at most 3 decimals")
    return bad


def _retry_policy_violations(policy: dict[str, Any]) -> list[str]:
    bad = [f"missing {k}" for k in RETRY_POLICY_KEYS - set(policy)]
    bad += [f"unknown key {k}" for k in set(policy) - RETRY_POLICY_KEYS]
    attempts = policy.get("maxAttempts")
    # Above 5 is silently capped to 5: a config asking for more says what it does not get.
    if not (isinstance(attempts, int) and 2 <= attempts <= 5):
        bad.append(f"maxAttempts {attempts!r} not in 2..5")
    for key in ("initialBackoff", "maxBackoff"):
        value = policy.get(key, "")
        if not (isinstance(value, str) and DURATION.match(value) and _seconds(value) > 0):
            bad.append(f"{key} {value!r} is not a positive duration")
    multiplier = policy.get("backoffMultiplier")
    if not (isinstance(multiplier, int | float) and multiplier > 0):
        bad.append(f"backoffMultiplier {multiplier!r} not above 0")
    codes = policy.get("retryableStatusCodes")
    if not codes or any(c not in STATUS_CODES or c == "OK" for c in codes):
        bad.append(f"retryableStatusCodes {codes!r}")
    return bad


def _names(config: dict[str, Any], *, retried: bool | None = None) -> list[tuple[str, str]]:
    return [
        (name["service"], name.get("method", ""))
        for entry in config["methodConfig"]
        if retried is None or ("retryPolicy" in entry) == retried
        for name in entry["name"]
    ]


def test_the_service_config_follows_grfc_a6() -> None:
    assert a6_violations(_config()) == []


def test_the_a6_check_finds_what_is_wrong() -> None:
    """The checker above is not vacuous: each mistake of a broken config is reported."""
    broken = _config()
    broken["methodConfig"][0]["retryPolicy"].update(maxAttempts=9, initialBackoff="100ms")
    broken["methodConfig"][0]["retryPolicy"]["retryableStatusCodes"] = ["UNAVAILBLE"]
    broken["methodConfig"][1]["name"].append(broken["methodConfig"][0]["name"][0])
    broken["methodConfig"][1]["timeout"] = "10"
    broken["retryThrottling"]["tokenRatio"] = 0.1234

    found = "\n".join(a6_violations(broken))
    for mistake in ("maxAttempts 9", "initialBackoff '100ms'", "UNAVAILBLE", "appears twice",
                    "timeout '10'", "tokenRatio 0.1234"):  # fmt: skip
        assert mistake in found, (mistake, found)


def test_the_service_config_names_only_existing_services_and_methods() -> None:
    for service, method in _names(_config()):
        assert service in SERVICES, service
        if method:
            assert method in SERVICES[service].methods_by_name, f"{service}/{method}"


def test_every_service_has_a_default_so_new_methods_get_a_timeout_and_no_retry() -> None:
    defaults = {service for service, method in _names(_config(), retried=False) if not method}
    assert defaults == set(SERVICES)


def test_only_reads_and_methods_with_an_idempotency_key_are_retried() -> None:
    pool = descriptor_pool.Default()
    for service, method in _names(_config(), retried=True):
        assert method, f"a whole service is retried: {service}"
        descriptor = SERVICES[service].methods_by_name[method]
        request = pool.FindMessageTypeByName(descriptor.input_type.full_name)
        keyed = any(key in request.fields_by_name for key in IDEMPOTENCY_KEYS)
        assert keyed or method.startswith(READS), f"{service}/{method} is not idempotent"
    for entry in _config()["methodConfig"]:
        if "retryPolicy" in entry:
            assert entry["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


def test_every_rpc_not_retried_is_one_without_an_idempotency_key() -> None:
    """The reverse: a keyed write or a read left out of the retry list is an oversight."""
    retried = set(_names(_config(), retried=True))
    for service in SERVICES.values():
        descriptor: ServiceDescriptor = service
        for method in descriptor.methods:
            keyed = any(k in method.input_type.fields_by_name for k in IDEMPOTENCY_KEYS)
            if keyed or method.name.startswith(READS):
                assert (service.full_name, method.name) in retried, method.full_name


def _channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        target,
        options=[("grpc.service_config", CONFIG_PATH.read_text()), ("grpc.enable_retries", 1)],
    )


async def test_a_channel_with_the_config_calls_the_bids_service(sqlite_url: str) -> None:
    await bids_support.migrate(sqlite_url)
    server = await bids_support.start(sqlite_url)
    admin = (("authorization", f"Bearer {bids_support.PRINCIPALS['admin'][0]}"),)
    try:
        async with _channel(f"127.0.0.1:{server.port}") as channel:
            stub = bids_pb2_grpc.BidServiceStub(channel)
            placed = await stub.PlaceBid(bids_support.place_bid_request(), metadata=admin)
            read = await stub.GetBid(
                bids_pb2.GetBidRequest(bid_id=placed.bid.bid_id), metadata=admin
            )
    finally:
        await server.stop(0)
    assert read.bid == placed.bid


@dataclass
class Flaky:
    """A BidService that fails its first ``failures`` calls of each method with UNAVAILABLE
    (ListBids hangs for a minute first)."""

    failures: int
    calls: dict[str, int] = field(default_factory=dict)

    def handler(self, method: str, response: Any) -> grpc.RpcMethodHandler[Any, Any]:
        async def answer(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            self.calls[method] = self.calls.get(method, 0) + 1
            if method == "ListBids":
                await asyncio.sleep(60)
            if self.calls[method] <= self.failures:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
            return response

        return grpc.unary_unary_rpc_method_handler(
            answer, request_deserializer=None, response_serializer=lambda m: m.SerializeToString()
        )


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[Flaky, str]]:
    behaviour = Flaky(failures=2)
    handlers = {
        "GetBid": behaviour.handler("GetBid", bids_pb2.GetBidResponse()),
        "ListBids": behaviour.handler("ListBids", bids_pb2.ListBidsResponse()),
        "CreateDeliveryToken": behaviour.handler(
            "CreateDeliveryToken", bids_pb2.CreateDeliveryTokenResponse()
        ),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("marketplace.bids.v1.BidService", handlers)]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield behaviour, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_the_channel_retries_unavailable_on_a_read(flaky: tuple[Flaky, str]) -> None:
    behaviour, target = flaky
    async with _channel(target) as channel:
        await bids_pb2_grpc.BidServiceStub(channel).GetBid(bids_pb2.GetBidRequest(bid_id="b"))
    assert behaviour.calls["GetBid"] == 3


async def test_the_channel_does_not_retry_a_method_without_an_idempotency_key(
    flaky: tuple[Flaky, str],
) -> None:
    behaviour, target = flaky
    async with _channel(target) as channel:
        stub = bids_pb2_grpc.BidServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.CreateDeliveryToken(bids_pb2.CreateDeliveryTokenRequest(task_id="t"))
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert behaviour.calls["CreateDeliveryToken"] == 1


async def test_the_configured_timeout_ends_a_call_made_without_a_deadline(
    flaky: tuple[Flaky, str],
) -> None:
    """The client enforces it (C-core does not send it as grpc-timeout): ListBids hangs."""
    behaviour, target = flaky
    timeouts = {
        (name["service"], name.get("method", "")): entry.get("timeout")
        for entry in _config()["methodConfig"]
        for name in entry["name"]
    }
    configured = _seconds(timeouts[("marketplace.bids.v1.BidService", "ListBids")])
    async with _channel(target) as channel:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await bids_pb2_grpc.BidServiceStub(channel).ListBids(bids_pb2.ListBidsRequest())
        elapsed = time.monotonic() - started
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert behaviour.calls["ListBids"] == 1
    # Generous bounds: the configured timeout, not the server's 60 s, ended the call
    # (gRPC's cached clock ends it up to about a second early).
    assert configured / 2 < elapsed < configured + 10.0
