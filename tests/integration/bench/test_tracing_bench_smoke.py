"""Smoke test of bench/tracing_bench.py: every configuration runs and is reported, and
the ``on`` configuration really records spans (so its figure measures tracing)."""

from __future__ import annotations

import argparse

import pytest
import tracing_bench as bench  # bench/ is on the tests' pythonpath
from marketplace_common import tracing

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


async def test_each_configuration_is_measured_and_reported(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configs = await bench._configs()
    try:
        for config in configs:
            tracing.install(config.provider)
            config.seconds.append(await bench._round(config.channel, 64, 4))
            tracing.install(None)
    finally:
        tracing.install(None)
        for config in configs:
            await config.channel.close(None)
            await config.server.stop(0)
    assert [c.name for c in configs] == ["before", "off", "on", "on-unsampled"]
    assert all(c.seconds and c.seconds[0] > 0 for c in configs)
    on = configs[2].provider
    assert on is not None
    bench._report(configs, argparse.Namespace(calls=64, rounds=1, concurrency=4))
    out = capsys.readouterr().out
    for name in ("before", "off", "on", "on-unsampled"):
        assert f"\n{name} " in out
    assert "log processor add_trace_ids" in out


async def test_sampled_configuration_exports_a_server_span_per_call() -> None:
    provider, exporter = bench._provider(sampled=True)
    tracing.install(provider)
    try:
        server = await bench._server()
        channel = bench._channel(server.port, before=False)
        try:
            await bench._round(channel, 8, 2)
        finally:
            await channel.close(None)
            await server.stop(0)
    finally:
        tracing.install(None)
    spans = exporter.get_finished_spans()
    kinds = sorted(span.kind.name for span in spans if span.name == bench.METHOD)
    assert kinds == ["CLIENT"] * 8 + ["SERVER"] * 8
