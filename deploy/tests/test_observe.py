"""`make observe`: the Prometheus configuration it writes is valid, scrapes the ports of the
stack `make run` starts, and loads the chart's own alert rules."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from deploy.tests.monitoring import promtool
from devstack import observe, stack


def test_observe_scrapes_the_local_stack_with_the_chart_rules(tmp_path: Path) -> None:
    local = stack.StackConfig(run_dir=tmp_path)
    written = yaml.safe_load(observe.write_config(tmp_path, local).read_text())
    jobs = {job["job_name"]: job["static_configs"][0] for job in written["scrape_configs"]}
    for service in stack.SERVICES:
        target = jobs[f"mediaflow-{service}"]
        assert target["targets"] == [f"127.0.0.1:{local.ports[service]}"]
        assert target["labels"] == {"namespace": observe.NAMESPACE}
    assert local.ports == {"auth": 8101, "gateway": 8102, "notifier": 8103, "worker": 8104}

    (rule_file,) = written["rule_files"]
    rules = yaml.safe_load(Path(rule_file).read_text())
    assert rules == observe.chart_alert_rules()
    alerts = {r["alert"]: r["expr"] for group in rules["groups"] for r in group["rules"]}
    # the rules' selectors pick the local targets' series
    (pattern,) = re.findall(r'job=~"([^"]+)"', alerts["MediaflowTargetDown"])
    assert f'namespace="{observe.NAMESPACE}"' in alerts["MediaflowTargetDown"]
    assert all(re.fullmatch(pattern, f"mediaflow-{s}") for s in stack.SERVICES)

    result = subprocess.run(
        [promtool(), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts)} rules found" in result.stdout + result.stderr
