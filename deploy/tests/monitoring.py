"""The metric names the chart's alert rules and Grafana dashboard use, shared by the chart
tests (against the services' registry) and the end-to-end test (against live /metrics)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import promql_parser

from devstack.observe import CHART, chart_alert_rules

DASHBOARD = CHART / "dashboards" / "mediaflow.json"
# Metrics the chart names that no mediaflow process exports, each with where it comes from.
EXTERNAL_METRICS = {
    "up": "Prometheus's own health series of every scrape target",
    "rabbitmq_detailed_queue_messages": (
        "RabbitMQ's rabbitmq_prometheus plugin, /metrics/detailed?family=queue_coarse_metrics"
    ),
    "rabbitmq_detailed_queue_messages_ready": "RabbitMQ's rabbitmq_prometheus plugin, as above",
    "rabbitmq_detailed_queue_messages_unacked": "RabbitMQ's rabbitmq_prometheus plugin, as above",
    "container_cpu_usage_seconds_total": "cAdvisor, which the kubelet serves on /metrics/cadvisor",
    "container_memory_working_set_bytes": "cAdvisor, as above",
    "kube_pod_container_status_restarts_total": "kube-state-metrics",
    "kube_deployment_status_replicas_available": "kube-state-metrics",
    "kube_deployment_spec_replicas": "kube-state-metrics",
}
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def promtool() -> str:
    """promtool's path. `make deps` installs it (Debian's prometheus package); a test that
    needs it fails without it rather than passing unchecked."""
    path = shutil.which("promtool")
    assert path is not None, "promtool is missing: `make deps` installs Debian's prometheus"
    return path


def metric_names(expr: str) -> set[str]:
    """Names of the series a PromQL expression selects; ValueError on bad PromQL."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return names


def dashboard_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every query, rows' panels included."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def substitute_grafana_variables(expr: str) -> str:
    for variable, value in {
        "$__rate_interval": "5m",
        "$namespace": "media",
        "$release": "mediaflow",
        "$amqp_namespace": "media",
    }.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, expr
    return expr


def chart_metric_names() -> dict[str, set[str]]:
    """Every metric the alert rules and the dashboard name -> where (alert or panel)."""
    named: dict[str, set[str]] = {}
    for group in chart_alert_rules()["groups"]:
        for rule in group["rules"]:
            for name in metric_names(rule["expr"]):
                named.setdefault(name, set()).add(f"alert {rule['alert']}")
    for title, expr in dashboard_exprs(json.loads(DASHBOARD.read_text())):
        for name in metric_names(substitute_grafana_variables(expr)):
            named.setdefault(name, set()).add(f"panel {title}")
    return named


def series_names(metric: str) -> set[str]:
    """The sample names a named metric needs: all three series of a histogram."""
    if metric.endswith("_bucket"):
        base = metric.removesuffix("_bucket")
        return {base + suffix for suffix in HISTOGRAM_SERIES}
    return {metric}
