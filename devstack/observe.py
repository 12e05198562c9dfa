"""``make observe``: a local Prometheus scraping the stack ``make run`` started, evaluating the
alert rules the Helm chart ships (rendered from its PrometheusRule, never copied by hand)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml

from devstack import stack

CHART = stack.REPO_ROOT / "deploy" / "helm" / "mediaflow"
RUN_DIR = stack.REPO_ROOT / ".run" / "observe"
# The chart's rules pick series by `namespace` and `job` (the labels its ServiceMonitors
# give); the local targets carry the same labels, so the rules apply unchanged.
RELEASE = "mediaflow"
NAMESPACE = "local"
RABBITMQ_PROMETHEUS_PORT = 15692


def chart_alert_rules() -> dict[str, Any]:
    """The chart's PrometheusRule `spec`, which is a Prometheus rule file."""
    import helm_python  # a dev dependency, like everything `make observe` runs

    chart = helm_python.Chart.load(str(CHART))
    try:
        rendered = chart.render(
            # A Secret of its own name: the rules need no credentials.
            values={"prometheusRule": {"enabled": True}, "secrets": {"existingSecret": "local"}},
            name=RELEASE,
            namespace=NAMESPACE,
        )
    finally:
        chart.close()
    (text,) = [text for path, text in rendered.items() if path.endswith("/prometheusrule.yaml")]
    spec: dict[str, Any] = yaml.safe_load(text)["spec"]
    return spec


def prometheus_config(config: stack.StackConfig, rules_file: Path) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = [
        {
            "job_name": f"{RELEASE}-{service}",
            "static_configs": [
                {
                    "targets": [f"127.0.0.1:{config.ports[service]}"],
                    "labels": {"namespace": NAMESPACE},
                }
            ],
        }
        for service in stack.SERVICES
    ]
    # The queue backlog and dead-letter alerts read RabbitMQ's per-queue metrics; this target
    # is down unless the broker's rabbitmq_prometheus plugin is enabled.
    jobs.append(
        {
            "job_name": "rabbitmq",
            "metrics_path": "/metrics/detailed",
            "params": {"family": ["queue_coarse_metrics", "queue_consumer_count"]},
            "static_configs": [{"targets": [f"127.0.0.1:{RABBITMQ_PROMETHEUS_PORT}"]}],
        }
    )
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": [str(rules_file)],
        "scrape_configs": jobs,
    }


def write_config(run_dir: Path, config: stack.StackConfig) -> Path:
    """Write the rule file and prometheus.yml into ``run_dir``; the path of the latter."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rules = run_dir / "rules.yaml"
    rules.write_text(yaml.safe_dump(chart_alert_rules(), sort_keys=False))
    path = run_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(prometheus_config(config, rules), sort_keys=False))
    return path


def up(port: int) -> str:
    """Start Prometheus on 127.0.0.1:``port`` unless it runs; its URL."""
    url = f"http://127.0.0.1:{port}"
    pid_file = RUN_DIR / "prometheus.pid"
    # The rules are re-rendered on every call, so a running Prometheus reloads them.
    config_file = write_config(RUN_DIR, stack.StackConfig(run_dir=RUN_DIR))
    if stack._alive(pid_file):
        httpx.post(f"{url}/-/reload", timeout=5).raise_for_status()
        return url
    if stack.port_open(port):
        raise SystemExit(f"port {port} is taken: set OBSERVE_PORT to a free one")
    prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
    logs = stack.REPO_ROOT / ".run" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "prometheus.log").open("ab") as log:
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={RUN_DIR / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",  # POST /-/reload
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file.write_text(str(process.pid))
    stack.wait_until(lambda: stack.port_open(port), f"Prometheus on {url}", timeout=30)
    return url


def down() -> None:
    stack.stop_pid_file(RUN_DIR / "prometheus.pid")


def main() -> None:
    url = up(int(os.environ.get("OBSERVE_PORT", "9090")))
    print(
        f"Prometheus at {url} scrapes the local stack with the chart's alert rules "
        f"({url}/alerts); data in {(RUN_DIR / 'data').relative_to(stack.REPO_ROOT)}, "
        "log in .run/logs/prometheus.log; `make stop` stops it"
    )


if __name__ == "__main__":
    main()
