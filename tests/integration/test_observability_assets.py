"""deploy/observability/: every metric an alert rule or a dashboard panel reads is one
the running services export, and the alerts an on-call needs are there.

The exported names come from the registries of real servers (bids and execution,
started in this process), so a metric renamed or added in the code is seen here
without editing this test.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from marketplace_bids.migrations import SCRIPT_LOCATION as BIDS_MIGRATIONS
from marketplace_bids.server import create_server as create_bids_server
from marketplace_bids.settings import BidsSettings
from marketplace_common.migrations import upgrade_async
from marketplace_execution.migrations import MIGRATIONS_DIR as EXECUTION_MIGRATIONS
from marketplace_execution.server import create_server as create_execution_server
from marketplace_execution.settings import ExecutionSettings
from prometheus_client import CollectorRegistry
from promql_names import metric_names

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "deploy" / "observability"
ALERTS = ASSETS / "alerts.yml"
DASHBOARD = ASSETS / "grafana-dashboard.json"

# The sample names each kind of metric family exposes (no *_created: disabled).
_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "unknown": ("",),
}


def exported(registry: CollectorRegistry) -> set[str]:
    """Every sample name ``registry`` can expose, labelled series with no child yet included."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


@pytest.fixture
async def exported_names(tmp_path: Path) -> AsyncIterator[set[str]]:
    """What both services' registries export, read from running servers."""
    bids_url = f"sqlite+aiosqlite:///{tmp_path / 'bids.db'}"
    execution_url = f"sqlite+aiosqlite:///{tmp_path / 'execution.db'}"
    await upgrade_async(bids_url, BIDS_MIGRATIONS)
    await upgrade_async(execution_url, EXECUTION_MIGRATIONS)
    bids, bids_port = await create_bids_server(
        BidsSettings(grpc_port=0, metrics_port=0, database_url=bids_url)
    )
    execution, _ = await create_execution_server(
        ExecutionSettings(
            grpc_port=0,
            metrics_port=0,
            database_url=execution_url,
            bids_target=f"127.0.0.1:{bids_port}",
        )
    )
    try:
        yield exported(bids.grpc.metrics.registry) | exported(execution.grpc.metrics.registry)
    finally:
        await execution.stop(0)
        await bids.stop(0)


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, expression) of every panel target and variable query of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]
        found.append((f"${variable['name']}", query["query"] if isinstance(query, dict) else query))
    return found


def all_expressions() -> list[tuple[str, str]]:
    return [(rule["alert"], rule["expr"]) for rule in alert_rules()] + dashboard_expressions()


def test_the_extractor_finds_metric_names_and_nothing_else() -> None:
    assert metric_names(
        "histogram_quantile(0.99, sum by (le, job) ("
        'rate(x_bucket{a="b,c(d)", job=~"$job"}[$__rate_interval])))'
    ) == {"x_bucket"}
    assert metric_names(
        "sum(rate(a_total[5m])) / on(job) group_left(instance) b offset 5m > 0.05 and c"
    ) == {"a_total", "b", "c"}
    assert metric_names("label_values(grpc_server_started_total, job)") == {
        "grpc_server_started_total"
    }
    assert metric_names("max_over_time(x[1h:5m]) * 1e3 > 2.5e-3 unless absent(y)") == {"x", "y"}
    assert metric_names("sum without (instance) (rate(z_total[5m]))") == {"z_total"}


def test_every_expression_reads_only_metrics_the_services_export(
    exported_names: set[str],
) -> None:
    # Sanity: the registries are the real ones (RPC, execution and LLM metrics).
    assert {
        "grpc_server_handled_total",
        "execution_queue_depth",
        "llm_attempts_total",
        "llm_rate_limited_total",
    } <= exported_names
    unknown = {}
    for where, expr in all_expressions():
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        if names - exported_names:
            unknown[where] = sorted(names - exported_names)
    assert unknown == {}


def test_the_alerts_an_on_call_needs_are_defined() -> None:
    rules = alert_rules()
    for rule in rules:
        assert rule["labels"]["severity"] in {"page", "warn"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
    reads = {rule["alert"]: metric_names(rule["expr"]) for rule in rules}

    def alerts_on(metric: str) -> list[str]:
        return [alert for alert, names in reads.items() if metric in names]

    assert alerts_on("grpc_server_handled_total")  # error ratio
    assert alerts_on("grpc_server_handling_seconds_bucket")  # p99 latency
    assert alerts_on("execution_queue_oldest_age_seconds")  # queue age
    assert alerts_on("execution_lease_lost_total")  # lease losses
    assert alerts_on("llm_rate_limited_total")  # the provider's 429 rate
    assert any("0.99" in rule["expr"] for rule in rules)
