"""The Helm chart, image and skaffold config, proven without a cluster.

The chart is rendered through helm-python-sdk (Helm embedded as a library) for several
values sets, linted strictly, and every built-in object is validated against the
Kubernetes 1.31 schemas in strict mode. Then the properties users rely on are checked
one by one: probes, the restricted security context, the routes of API.md, the SSE
ingress, the hooks, the network policies, the alerts (promtool) and the dashboard.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

from deploy.tests import crds
from deploy.tests.monitoring import (
    EXTERNAL_METRICS,
    dashboard_exprs,
    metric_names,
    promtool,
    substitute_grafana_variables,
)

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "mediaflow"
VALUES_SETS = CHART / "ci"
RELEASE = "mediaflow"
NAMESPACE = "media"
KUBE_VERSION = "1.31"
# The chart's floor (Chart.yaml kubeVersion), the version checked throughout, and the newest.
KUBE_VERSIONS = ("1.27", KUBE_VERSION, "1.37")
COMPONENTS = ("auth", "gateway", "notifier", "worker")
# Custom resources the chart may render; kubernetes-validate has no schema for them, so
# they are validated against their CRDs' schemas (deploy/tests/crds/).
CUSTOM_KINDS = {
    "ServiceMonitor",
    "PrometheusRule",
    "ScaledObject",
    "TriggerAuthentication",
    "HTTPRoute",
}
# The processes' entry modules: importing them registers every metric they export.
ENTRY_MODULES = (
    "mediaflow_auth.app",
    "mediaflow_gateway.app",
    "mediaflow_notifier.app",
    "mediaflow_worker.main",
)
SETTINGS_CLASSES = {
    "auth": ("mediaflow_auth.settings", "AuthSettings"),
    "gateway": ("mediaflow_gateway.settings", "GatewaySettings"),
    "notifier": ("mediaflow_notifier.settings", "NotifierSettings"),
    "worker": ("mediaflow_worker.settings", "WorkerSettings"),
}


# ---- rendering ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    loaded = helm_python.Chart.load(str(CHART))
    yield loaded
    loaded.close()


def values_set(name: str) -> dict[str, Any]:
    """A values set of ci/; "default" is the chart's defaults plus the credentials it requires."""
    return yaml.safe_load((VALUES_SETS / f"{name}-values.yaml").read_text()) or {}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` deep-merged over a copy of `base`, as Helm merges values files."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def installable(values: dict[str, Any]) -> dict[str, Any]:
    """`values` over the "default" set, which holds the credentials the chart requires."""
    return merge(values_set("default"), values)


def render_raw(chart: helm_python.Chart, values: dict[str, Any]) -> dict[str, str]:
    return chart.render(values=copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE)


def render(chart: helm_python.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    docs = []
    for path, text in sorted(render_raw(chart, values).items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return docs


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def main_container(deployment: dict[str, Any]) -> dict[str, Any]:
    """The component's own container (sidecars may sit beside it)."""
    component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
    (container,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == component
    ]
    return container


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(object, pod spec) of every Deployment, Job and bare Pod."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            yield doc, doc["spec"]["template"]["spec"]
        elif doc["kind"] == "Pod":
            yield doc, doc["spec"]


ALL_SETS = [
    "default",
    "everything",
    "extensions",
    "keda",
    "gateway-api",
    "ingress",
    "minimal",
    "existing-secret",
]


@pytest.fixture(scope="module")
def rendered(chart: helm_python.Chart) -> dict[str, list[dict[str, Any]]]:
    return {name: render(chart, values_set(name)) for name in ALL_SETS}


# ---- lint and schemas --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_SETS)
def test_chart_lints_strictly(name: str) -> None:
    report = helm_python.lint(str(CHART), values_set(name), strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert report["messages"] == []  # not even the "icon is recommended" info


def test_lint_of_the_bare_defaults_is_clean() -> None:
    """Helm's lint mode logs `fail` instead of stopping, so the bare defaults lint clean too;
    rendering them fails (test_a_missing_credential_fails_the_render_naming_it)."""
    report = helm_python.lint(str(CHART), strict=True)
    assert report["errors"] == []
    assert report["messages"] == []


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", ALL_SETS)
def test_every_object_validates_against_kubernetes(
    rendered: dict[str, list[dict[str, Any]]], name: str, version: str
) -> None:
    docs = rendered[name]
    assert docs
    validated = 0
    for doc in docs:
        where = f"{doc['kind']} {doc['metadata']['name']}"
        if name == "extensions" and doc["kind"] == "ServiceMonitor":
            assert doc["metadata"]["namespace"] == "monitoring", where
        else:
            assert doc["metadata"]["namespace"] == NAMESPACE, where
        if doc["kind"] in CUSTOM_KINDS:
            with pytest.raises(SchemaNotFoundError):
                kubernetes_validate.validate(doc, version, strict=True)
            crds.validate(doc)  # against its CRD's own schema instead
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        validated += 1
    assert validated >= 8 if name != "minimal" else validated >= 6


def test_validation_catches_a_broken_object(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The validator bites: a misspelled field and a wrong type are rejected."""
    deployment = copy.deepcopy(one(rendered["default"], "Deployment", f"{RELEASE}-gateway"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)
    deployment = copy.deepcopy(one(rendered["default"], "Deployment", f"{RELEASE}-gateway"))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


def test_every_custom_kind_has_a_vendored_crd_schema() -> None:
    assert crds.kinds() == CUSTOM_KINDS


def _custom_resources(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for docs in rendered.values() for d in docs if d["kind"] in CUSTOM_KINDS}


# One deliberate mistake per kind: a misspelled field (which the API server's strict field
# validation rejects), a wrong type or a value outside the schema's enum.
BROKEN = {
    "ServiceMonitor": lambda d: d["spec"]["endpoints"][0].update(intervall="30s"),
    "PrometheusRule": lambda d: d["spec"]["groups"][0]["rules"][0].update(expr=["up"]),
    "ScaledObject": lambda d: d["spec"].update(minReplicaCount="zero"),
    "TriggerAuthentication": lambda d: d["spec"]["secretTargetRef"][0].pop("key"),
    "HTTPRoute": lambda d: d["spec"]["rules"][0]["matches"][0]["path"].update(type="Glob"),
}


@pytest.mark.parametrize("kind", sorted(CUSTOM_KINDS))
def test_crd_validation_rejects_a_broken_object(
    rendered: dict[str, list[dict[str, Any]]], kind: str
) -> None:
    doc = copy.deepcopy(_custom_resources(rendered)[kind])
    crds.validate(doc)
    BROKEN[kind](doc)
    with pytest.raises(jsonschema.ValidationError):
        crds.validate(doc)


def test_crd_validation_rejects_an_unknown_field_anywhere(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    route = copy.deepcopy(_custom_resources(rendered)["HTTPRoute"])
    route["spec"]["rules"][1]["timeouts"]["requests"] = "1s"
    with pytest.raises(jsonschema.ValidationError, match="requests"):
        crds.validate(route)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"worker": {"replicaCount": "two"}}, "/worker/replicaCount"),
        ({"config": {"publicUrl": "media.example.com"}}, "/config/publicUrl"),
        ({"ingress": {"enabled": "yes"}}, "/ingress/enabled"),
        ({"secrets": {"serviceSecret": "too-short"}}, "/secrets/serviceSecret"),
        ({"gateway": {"autoscaling": {"targetCPUUtilizationPercentage": 150}}}, "targetCPU"),
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
    ],
)
def test_values_schema_rejects_bad_values(
    chart: helm_python.Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=message):
        render_raw(chart, values)


def test_kube_version_floor_is_validated() -> None:
    floor = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    assert floor == f">={KUBE_VERSIONS[0]}.0-0"


def test_every_ci_values_set_is_tested() -> None:
    on_disk = {path.name.removesuffix("-values.yaml") for path in VALUES_SETS.glob("*-values.yaml")}
    assert on_disk == set(ALL_SETS)


# ---- workloads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_SETS)
def test_workloads_are_hardened(rendered: dict[str, list[dict[str, Any]]], name: str) -> None:
    checked = 0
    for obj, spec in pod_specs(rendered[name]):
        where = f"{obj['kind']} {obj['metadata']['name']}"
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, where
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert isinstance(sc["runAsUser"], int), where
            assert sc["runAsUser"] > 0, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert len(tmp) == 1, where
            assert "emptyDir" in volumes[tmp[0]["name"]], where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), where
            checked += 1
    assert checked >= 4


@pytest.mark.parametrize("name", ALL_SETS)
def test_deployments_probe_healthz_and_readyz(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    deployments = of_kind(rendered[name], "Deployment")
    assert sorted(
        d["metadata"]["labels"]["app.kubernetes.io/component"] for d in deployments
    ) == sorted(COMPONENTS)
    for deployment in deployments:
        container = main_container(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] in ports


def _env(container: dict[str, Any], configmap: dict[str, Any]) -> dict[str, Any]:
    env = {e["name"]: e for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == configmap["metadata"]["name"]
        for key, value in configmap["data"].items():
            env.setdefault(key, {"name": key, "value": value})
    return env


@pytest.mark.parametrize("name", ["default", "everything"])
def test_each_process_gets_the_settings_it_reads(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    """Every variable set is a field of the service's settings class (or OTEL_*), every
    required field is set, HOST is 0.0.0.0 and PORT is the container port."""
    docs = rendered[name]
    configmap = one(docs, "ConfigMap", f"{RELEASE}-config")
    for component, (module, cls) in SETTINGS_CLASSES.items():
        settings = getattr(importlib.import_module(module), cls)
        fields = {field.upper(): info for field, info in settings.model_fields.items()}
        deployment = one(docs, "Deployment", f"{RELEASE}-{component}")
        container = main_container(deployment)
        env = _env(container, configmap)
        own = set(env) - set(configmap["data"])  # set for this component alone
        unknown = {n for n in own if n not in fields and not n.startswith("OTEL_")}
        assert unknown == set(), (component, unknown)
        required = {n for n, info in fields.items() if info.is_required()}
        assert required <= set(env), (component, required - set(env))
        assert env["HOST"]["value"] == "0.0.0.0"
        assert int(env["PORT"]["value"]) == container["ports"][0]["containerPort"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if "AUTH_INTERNAL_URL" in fields:
            # auth's internal port, never its public one
            assert env["AUTH_INTERNAL_URL"]["value"] == f"http://{RELEASE}-auth:8111"
        if "INTERNAL_PORT" in fields:
            assert int(env["INTERNAL_PORT"]["value"]) == ports["internal"] == 8111
            assert ports["http"] != ports["internal"]
    # The shared ConfigMap holds only variables some service reads.
    read_somewhere = set()
    for module, cls in SETTINGS_CLASSES.values():
        read_somewhere |= {
            f.upper() for f in getattr(importlib.import_module(module), cls).model_fields
        }
    assert set(configmap["data"]) <= read_somewhere


def test_commands_are_the_workspace_console_scripts(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    scripts: set[str] = set()
    for pyproject in [REPO / "libs" / "pyproject.toml", *REPO.glob("services/*/pyproject.toml")]:
        scripts |= set(tomllib.loads(pyproject.read_text()).get("project", {}).get("scripts", {}))
    for obj, spec in pod_specs(rendered["default"]):
        for container in spec["containers"]:
            if obj["kind"] == "Pod":  # the helm test pod runs python itself
                continue
            assert container["command"][0] in scripts, (
                obj["metadata"]["name"],
                container["command"],
            )
    expected = {f"mediaflow-{c}" for c in COMPONENTS} | {"mediaflow-migrate"}
    used = {
        spec["containers"][0]["command"][0]
        for obj, spec in pod_specs(rendered["default"])
        if obj["kind"] != "Pod"
    }
    assert used == expected


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.mark.parametrize("name", ALL_SETS)
def test_component_selectors_never_overlap(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    docs = rendered[name]
    deployments = of_kind(docs, "Deployment")
    for a in deployments:
        selector = a["spec"]["selector"]["matchLabels"]
        assert _matches(selector, a["spec"]["template"]["metadata"]["labels"])
        for b in deployments:
            if a is not b:
                assert not _matches(selector, b["spec"]["template"]["metadata"]["labels"]), (
                    a["metadata"]["name"],
                    b["metadata"]["name"],
                )
    # Services, PDBs and the migrations/test pods select only their own component.
    pods = [
        (d["metadata"]["name"], d["spec"]["template"]["metadata"]["labels"]) for d in deployments
    ]
    pods += [(obj["metadata"]["name"], spec_labels) for obj, spec_labels in _other_pod_labels(docs)]
    for service in of_kind(docs, "Service"):
        if "selector" not in service["spec"]:
            continue
        selected = [n for n, labels in pods if _matches(service["spec"]["selector"], labels)]
        assert selected == [service["metadata"]["name"]], service["metadata"]["name"]
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        selected = [
            n for n, labels in pods if _matches(pdb["spec"]["selector"]["matchLabels"], labels)
        ]
        assert selected == [pdb["metadata"]["name"]]


def _other_pod_labels(
    docs: list[dict[str, Any]],
) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    for doc in docs:
        if doc["kind"] == "Job":
            yield doc, doc["spec"]["template"]["metadata"]["labels"]
        elif doc["kind"] == "Pod":
            yield doc, doc["metadata"]["labels"]


def test_labels_follow_kubernetes_conventions(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for doc in rendered["everything"]:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "mediaflow"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"].startswith("mediaflow-")
        assert "app.kubernetes.io/version" in labels


def test_topology_spread_and_replicas(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for deployment in of_kind(rendered["default"], "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        keys = [c["topologyKey"] for c in spec["topologySpreadConstraints"]]
        assert keys == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
        for constraint in spec["topologySpreadConstraints"]:
            assert (
                constraint["labelSelector"]["matchLabels"]
                == deployment["spec"]["selector"]["matchLabels"]
            )
        assert deployment["spec"]["replicas"] >= 2
    for deployment in of_kind(rendered["minimal"], "Deployment"):
        assert "topologySpreadConstraints" not in deployment["spec"]["template"]["spec"]


def test_worker_grace_period_outlasts_its_shutdown_grace(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    from mediaflow_worker.settings import WorkerSettings

    grace = WorkerSettings.model_fields["shutdown_grace_seconds"].default
    worker = one(rendered["default"], "Deployment", f"{RELEASE}-worker")
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace


# ---- extension points --------------------------------------------------------------------------


def _deployment(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    return one(docs, "Deployment", f"{RELEASE}-{component}")


def test_global_registry_pull_secrets_and_per_component_image(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["extensions"]
    images = {}
    for obj, spec in pod_specs(docs):
        if obj["kind"] == "Deployment":
            images[obj["metadata"]["name"]] = main_container(obj)["image"]
        else:
            images[obj["metadata"]["name"]] = spec["containers"][0]["image"]
        assert spec["imagePullSecrets"] == [{"name": "global-regcred"}, {"name": "regcred"}]
    mirror = "registry.example.org/mirror"
    assert images.pop(f"{RELEASE}-worker") == f"{mirror}/mediaflow-worker@sha256:{'0' * 63}1"
    assert set(images.values()) == {f"{mirror}/mediaflow:0.1.0"}
    assert len(images) == 5  # auth, gateway, notifier, the migrations Job, the test pod


def test_probes_strategy_and_history_per_component(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["extensions"]
    worker = main_container(_deployment(docs, "worker"))
    assert worker["livenessProbe"]["periodSeconds"] == 20
    assert worker["livenessProbe"]["failureThreshold"] == 6
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"  # the rest stays shared
    assert main_container(_deployment(docs, "auth"))["livenessProbe"]["periodSeconds"] == 10
    notifier = _deployment(docs, "notifier")["spec"]
    assert notifier["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    assert _deployment(docs, "auth")["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert _deployment(docs, "gateway")["spec"]["revisionHistoryLimit"] == 10
    assert _deployment(docs, "auth")["spec"]["revisionHistoryLimit"] == 3
    assert _deployment(rendered["default"], "auth")["spec"]["revisionHistoryLimit"] == 5


def test_extra_env_vars_with_value_from_and_env_sources(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["extensions"]
    for component in COMPONENTS:
        container = main_container(_deployment(docs, component))
        env = {e["name"]: e for e in container["env"]}
        assert env["OTEL_K8S_NODE_NAME"]["valueFrom"] == {
            "fieldRef": {"fieldPath": "spec.nodeName"}
        }
        assert env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"] == {
            "name": "otel-auth",
            "key": "headers",
        }
        sources = container["envFrom"]
        # the chart's ConfigMap first, so the operator's sources win on a clash
        assert sources[0] == {"configMapRef": {"name": f"{RELEASE}-config"}}
        assert {"configMapRef": {"name": "mediaflow-extra-env"}} in sources
        assert {"secretRef": {"name": f"{RELEASE}-extra-secret-env"}} in sources  # tpl
        own = {"secretRef": {"name": "worker-extra-env"}}
        assert (own in sources) == (component == "worker")
    notifier = {e["name"]: e for e in main_container(_deployment(docs, "notifier"))["env"]}
    assert notifier["SSE_HEARTBEAT_SECONDS"] == {"name": "SSE_HEARTBEAT_SECONDS", "value": "10"}
    # a component's own entries come after the shared ones: Kubernetes keeps the last
    names = [e["name"] for e in main_container(_deployment(docs, "notifier"))["env"]]
    assert names.index("SSE_HEARTBEAT_SECONDS") > names.index("OTEL_EXPORTER_OTLP_HEADERS")


def test_extra_volumes_init_containers_and_sidecars(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["extensions"]
    worker = _deployment(docs, "worker")["spec"]["template"]["spec"]
    assert {"name": "scratch", "emptyDir": {"sizeLimit": "2Gi"}} in worker["volumes"]
    mounts = main_container(_deployment(docs, "worker"))["volumeMounts"]
    assert {"name": "scratch", "mountPath": "/scratch"} in mounts
    gateway = _deployment(docs, "gateway")["spec"]["template"]["spec"]
    assert [c["name"] for c in gateway["initContainers"]] == ["wait-for-schema"]
    assert [c["name"] for c in gateway["containers"]] == ["gateway"]
    notifier = _deployment(docs, "notifier")["spec"]["template"]["spec"]
    assert [c["name"] for c in notifier["containers"]] == ["notifier", "log-shipper"]
    for component in ("auth", "notifier"):
        spec = _deployment(docs, component)["spec"]["template"]["spec"]
        assert "initContainers" not in spec
        assert [v["name"] for v in spec["volumes"]] == ["tmp"]


def test_bring_your_own_service_account(
    rendered: dict[str, list[dict[str, Any]]], chart: helm_python.Chart
) -> None:
    docs = rendered["extensions"]  # create: false, name: mediaflow-irsa
    assert of_kind(docs, "ServiceAccount") == [
        sa
        for sa in of_kind(docs, "ServiceAccount")
        if sa["metadata"]["name"].endswith("migrations")
    ]
    for component in COMPONENTS:
        spec = _deployment(docs, component)["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == "mediaflow-irsa"
    # create: true with a name makes that one account for every component
    shared = render(chart, installable({"serviceAccount": {"name": "mediaflow"}}))
    accounts = [sa["metadata"]["name"] for sa in of_kind(shared, "ServiceAccount")]
    assert sorted(accounts) == ["mediaflow", f"{RELEASE}-migrations"]
    for component in COMPONENTS:
        spec = _deployment(shared, component)["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == "mediaflow"


def test_service_monitor_namespace_and_relabelings(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    monitors = of_kind(rendered["extensions"], "ServiceMonitor")
    assert len(monitors) == len(COMPONENTS)
    for monitor in monitors:
        assert monitor["metadata"]["namespace"] == "monitoring"
        # still the release namespace's Services
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["relabelings"] == [
            {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}
        ]
        assert endpoint["metricRelabelings"][0]["action"] == "drop"


def test_network_policy_extra_rules_and_node_local_dns(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["extensions"]
    for component in (*COMPONENTS, "migrations"):
        policy = _policy(docs, component)["spec"]
        dns = policy["egress"][0]
        assert {"port": 53, "protocol": "UDP"} in dns["ports"]
        assert {"ipBlock": {"cidr": "169.254.20.10/32"}} in dns["to"]
        assert policy["egress"][-1]["ports"] == [{"port": 4318, "protocol": "TCP"}]
        if component != "migrations":
            assert policy["ingress"][-1]["ports"] == [{"port": 4191, "protocol": "TCP"}]
    # the worker's own rule keeps NodeLocal DNSCache's address out of the internet block
    # (169.254.0.0/16 stays excepted) while DNS to it is allowed
    worker = _policy(docs, "worker")["spec"]["egress"]
    internet = [p["ipBlock"] for r in worker for p in r["to"] if "ipBlock" in p]
    assert any("169.254.0.0/16" in b.get("except", []) for b in internet)


# ---- traffic -----------------------------------------------------------------------------------


def _ingress_paths(docs: list[dict[str, Any]]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(path, pathType, backend service, ingress) of every Ingress path."""
    paths = []
    for ingress in of_kind(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                paths.append((p["path"], p["pathType"], p["backend"]["service"]["name"], ingress))
    return paths


def _prefix_matches(prefix: str, path: str) -> bool:
    """Ingress `Prefix` semantics: element-wise on '/'-separated parts."""
    want = [p for p in prefix.split("/") if p]
    have = [p for p in path.split("/") if p]
    return have[: len(want)] == want


def route_ingress(docs: list[dict[str, Any]], path: str) -> str:
    """The Service an Ingress controller sends `path` to: Exact wins, then the longest Prefix."""
    candidates = _ingress_paths(docs)
    exact = [c for c in candidates if c[1] == "Exact" and c[0] == path]
    if exact:
        return exact[0][2]
    prefixes = [c for c in candidates if c[1] == "Prefix" and _prefix_matches(c[0], path)]
    return max(prefixes, key=lambda c: len(c[0].rstrip("/")))[2]


@pytest.mark.parametrize(
    ("path", "component"),
    [
        ("/v1/auth/sign-in", "auth"),
        ("/v1/auth/api-keys/123", "auth"),
        ("/v1/events", "notifier"),
        ("/v1/tasks", "gateway"),
        ("/v1/tasks/abc/download", "gateway"),
        ("/v1/me", "gateway"),
        ("/v1/authority", "gateway"),
        ("/", "gateway"),
        ("/index.html", "gateway"),
        ("/internal/v1/sessions/verify", "blocked"),
        ("/internal", "blocked"),
        ("/healthz", "blocked"),
        ("/readyz", "blocked"),
        ("/metrics", "blocked"),
        ("/diagnostics", "blocked"),
    ],
)
def test_ingress_routes_api_md(
    rendered: dict[str, list[dict[str, Any]]], path: str, component: str
) -> None:
    assert route_ingress(rendered["ingress"], path) == f"{RELEASE}-{component}"


def test_internal_and_health_paths_reach_no_pod(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["ingress"]
    blocked = one(docs, "Service", f"{RELEASE}-blocked")
    assert "selector" not in blocked["spec"]  # no endpoints: nothing behind it
    # auth is reached only through /v1/auth
    auth_paths = [p for p in _ingress_paths(docs) if p[2] == f"{RELEASE}-auth"]
    assert [(p[0], p[1]) for p in auth_paths] == [("/v1/auth", "Prefix")]
    assert all(
        not p[0].startswith("/internal") or p[2] == f"{RELEASE}-blocked"
        for p in _ingress_paths(docs)
    )


def test_sse_ingress_carries_the_controllers_sse_annotations(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    events = one(rendered["ingress"], "Ingress", f"{RELEASE}-events")
    ((path, path_type, backend, _),) = _ingress_paths([events])
    assert (path, path_type, backend) == ("/v1/events", "Exact", f"{RELEASE}-notifier")
    assert events["metadata"]["annotations"] == {"haproxy.org/timeout-server": "3600s"}
    assert events["spec"]["ingressClassName"] == "haproxy"
    # the main Ingress keeps the controller's defaults
    main = one(rendered["ingress"], "Ingress", RELEASE)
    assert "annotations" not in main["metadata"]


def test_the_httproute_is_the_default_route(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    assert of_kind(docs, "Ingress") == []
    route = one(docs, "HTTPRoute", RELEASE)
    assert route["spec"]["hostnames"] == ["media.example.com"]  # config.publicUrl's host
    # and no ingress-nginx annotation is left anywhere in the defaults
    values = (CHART / "values.yaml").read_text()
    assert "nginx.ingress.kubernetes.io" not in values


def test_ingress_host_and_tls(
    rendered: dict[str, list[dict[str, Any]]], chart: helm_python.Chart
) -> None:
    main = one(rendered["everything"], "Ingress", RELEASE)
    assert main["spec"]["rules"][0]["host"] == "media.example.org"
    assert main["spec"]["tls"] == [{"secretName": "mediaflow-tls", "hosts": ["media.example.org"]}]
    assert main["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    # an IP in PUBLIC_URL cannot be an Ingress host: the rules then match any host
    local = render(
        chart,
        installable(
            {"config": {"publicUrl": "http://127.0.0.1:8080"}, "ingress": {"enabled": True}}
        ),
    )
    assert of_kind(local, "Ingress")
    for ingress in of_kind(local, "Ingress"):
        assert "host" not in ingress["spec"]["rules"][0]


def route_httproute(route: dict[str, Any], path: str) -> dict[str, Any]:
    """The HTTPRoute rule that wins for `path` (Exact, then the longest prefix)."""
    best: tuple[int, int, dict[str, Any]] | None = None
    for rule in route["spec"]["rules"]:
        for match in rule["matches"]:
            kind, value = match["path"]["type"], match["path"]["value"]
            if kind == "Exact" and value == path:
                score = (1, len(value))
            elif kind == "PathPrefix" and _prefix_matches(value, path):
                score = (0, len(value.rstrip("/")))
            else:
                continue
            if best is None or score > best[:2]:
                best = (*score, rule)
    assert best is not None, path
    return best[2]


def forwarded(route: dict[str, Any], path: str) -> tuple[list[str], str]:
    """(backend names, path the backend sees) of a request for `path`."""
    rule = route_httproute(route, path)
    seen = path
    for f in rule.get("filters", []):
        if f["type"] == "URLRewrite" and f["urlRewrite"]["path"]["type"] == "ReplaceFullPath":
            seen = f["urlRewrite"]["path"]["replaceFullPath"]
    return [ref["name"] for ref in rule.get("backendRefs", [])], seen


BLOCKED_PATHS = ("/internal/v1/sessions/verify", "/metrics", "/healthz", "/readyz", "/diagnostics")


def test_httproute_routes_api_md(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["gateway-api"]
    assert of_kind(docs, "Ingress") == []
    route = one(docs, "HTTPRoute", RELEASE)
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["hostnames"] == ["media.example.net"]
    assert route["spec"]["parentRefs"][0]["name"] == "gateway"
    cases = {
        "/v1/auth/sign-up": f"{RELEASE}-auth",
        "/v1/events": f"{RELEASE}-notifier",
        "/v1/tasks": f"{RELEASE}-gateway",
        "/": f"{RELEASE}-gateway",
    }
    for path, backend in cases.items():
        assert forwarded(route, path) == ([backend], path), path
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    for rule in route["spec"]["rules"]:
        for ref in rule.get("backendRefs", []):
            ports = [p["port"] for p in services[ref["name"]]["spec"]["ports"]]
            assert ref["port"] in ports


def test_httproute_carries_the_sse_settings(
    rendered: dict[str, list[dict[str, Any]]], chart: helm_python.Chart
) -> None:
    from mediaflow_notifier.settings import NotifierSettings

    heartbeat = NotifierSettings.model_fields["sse_heartbeat_seconds"].default
    route = one(rendered["default"], "HTTPRoute", RELEASE)
    events = route_httproute(route, "/v1/events")
    assert [m["path"] for m in events["matches"]] == [{"type": "Exact", "value": "/v1/events"}]
    timeouts = events["timeouts"]
    # An hour's stream, not the 15 s an Envoy route allows by default; well past the heartbeat
    seconds = {k: int(v.removesuffix("s")) for k, v in timeouts.items()}
    assert seconds == {"request": 3600, "backendRequest": 3600}
    assert seconds["backendRequest"] <= seconds["request"]
    assert seconds["request"] > 10 * heartbeat
    # only the stream gets them: the API keeps the Gateway's own request timeout
    for path in ("/v1/tasks", "/v1/auth/sign-in", "/"):
        assert "timeouts" not in route_httproute(route, path)
    custom = render(
        chart,
        installable({"gatewayApi": {"eventsTimeouts": {"request": "0s", "backendRequest": "0s"}}}),
    )
    assert route_httproute(one(custom, "HTTPRoute", RELEASE), "/v1/events")["timeouts"] == {
        "request": "0s",
        "backendRequest": "0s",
    }


def test_httproute_answers_blocked_paths_with_the_gateways_problem_json(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The private paths reach the gateway rewritten to a path it has no route for, so the
    client gets the gateway's own 404 problem+json, never a service's /metrics."""
    from litestar.testing import TestClient

    from mediaflow_gateway.app import create_app
    from mediaflow_gateway.settings import GatewaySettings

    route = one(rendered["default"], "HTTPRoute", RELEASE)
    settings = GatewaySettings(
        database_url="postgresql://u:p@127.0.0.1:1/none",
        amqp_url="amqp://u:p@127.0.0.1:1/",
        service_secret="s" * 40,
        s3_access_key_id="key",
        s3_secret_access_key="secret",
    )
    client = TestClient(create_app(settings))  # no lifespan: routing alone answers this
    for path in BLOCKED_PATHS:
        backends, seen = forwarded(route, path)
        assert backends == [f"{RELEASE}-gateway"], path
        assert seen != path
        response = client.get(seen)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "not_found"
    # the same paths are served when asked directly: the rewrite is what hides them
    assert client.get("/metrics").status_code == 200


def test_httproute_blocked_paths_without_urlrewrite(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    route = one(rendered["everything"], "HTTPRoute", RELEASE)  # mode: noBackend
    for path in BLOCKED_PATHS:
        rule = route_httproute(route, path)
        assert "backendRefs" not in rule and "filters" not in rule, path


# ---- scaling -----------------------------------------------------------------------------------


def test_keda_and_worker_hpa_are_mutually_exclusive(chart: helm_python.Chart) -> None:
    both = {"worker": {"keda": {"enabled": True}, "autoscaling": {"enabled": True}}}
    with pytest.raises(helm_python.HelmRenderError, match="mutually exclusive"):
        render_raw(chart, installable(both))


def test_keda_scales_the_worker_on_the_jobs_queue(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["keda"]
    scaled = one(docs, "ScaledObject", f"{RELEASE}-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == f"{RELEASE}-worker"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"] == {
        "protocol": "http",
        "queueName": "media.jobs",
        "mode": "QueueLength",
        "value": "5",
    }
    auth = one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "host", "name": RELEASE, "key": "amqp-management-url"}
    ]
    secret = one(docs, "Secret", RELEASE)["stringData"]
    assert secret["amqp-management-url"].startswith("http://mediaflow:")
    worker = one(docs, "Deployment", f"{RELEASE}-worker")
    assert "replicas" not in worker["spec"]  # KEDA owns it
    assert [
        h
        for h in of_kind(docs, "HorizontalPodAutoscaler")
        if h["metadata"]["name"].endswith("worker")
    ] == []


def test_keda_counts_jobs_in_flight(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """KEDA's rabbitmq scaler counts ready *and* unacknowledged messages only over the
    management API (protocol http, excludeUnacknowledged unset); over AMQP it sees ready
    ones alone, and a worker running the queue's last job could be scaled to zero."""
    for name in ("keda", "everything"):
        scaled = one(rendered[name], "ScaledObject", f"{RELEASE}-worker")
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["metadata"]["protocol"] == "http"
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["metadata"].get("excludeUnacknowledged", "false") == "false"
        assert "useRegex" not in trigger["metadata"]  # one queue: media.jobs
        auth = one(rendered[name], "TriggerAuthentication", trigger["authenticationRef"]["name"])
        (ref,) = auth["spec"]["secretTargetRef"]
        assert ref["key"] == "amqp-management-url"


def test_keda_needs_the_management_api_url(chart: helm_python.Chart) -> None:
    values = installable({"worker": {"keda": {"enabled": True}}})
    missing = r"secrets\.amqpManagementUrl is required"
    with pytest.raises(helm_python.HelmRenderError, match=missing):
        render_raw(chart, values)
    values["secrets"]["amqpManagementUrl"] = "http://rabbitmq:15672/%2F"
    with pytest.raises(helm_python.HelmRenderError, match=r"amqpManagementUrl .* has no password"):
        render_raw(chart, values)


def test_scale_down_never_ends_a_running_job_before_its_grace(
    rendered: dict[str, list[dict[str, Any]]], chart: helm_python.Chart
) -> None:
    from mediaflow_worker.settings import WorkerSettings

    longest_fetch = WorkerSettings.model_fields["fetch_total_timeout_seconds"].default
    for name in ("keda", "everything", "default"):
        worker = one(rendered[name], "Deployment", f"{RELEASE}-worker")
        spec = worker["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        grace = float(env["SHUTDOWN_GRACE_SECONDS"])
        # a draining worker lets its jobs run past the longest download, and Kubernetes
        # waits for it to finish draining
        assert grace > longest_fetch
        assert spec["terminationGracePeriodSeconds"] > grace
    scaled = one(rendered["keda"], "ScaledObject", f"{RELEASE}-worker")
    scale_down = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"][
        "scaleDown"
    ]
    assert scale_down["stabilizationWindowSeconds"] >= 300
    assert scale_down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 120}]
    assert scaled["spec"]["cooldownPeriod"] >= 60
    short = installable({"worker": {"terminationGracePeriodSeconds": 60}})
    with pytest.raises(helm_python.HelmRenderError, match=r"must exceed worker\.shutdownGrace"):
        render_raw(chart, short)


def test_hpas_for_gateway_and_notifier(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["everything"]
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(docs, "HorizontalPodAutoscaler")
    }
    assert set(hpas) == {f"{RELEASE}-gateway", f"{RELEASE}-notifier"}
    for name in hpas:
        assert "replicas" not in one(docs, "Deployment", name)["spec"]
    resources = {m["resource"]["name"] for m in hpas[f"{RELEASE}-notifier"]["spec"]["metrics"]}
    assert resources == {"cpu", "memory"}
    assert of_kind(rendered["default"], "HorizontalPodAutoscaler") == []


def test_pod_disruption_budgets(rendered: dict[str, list[dict[str, Any]]]) -> None:
    pdbs = of_kind(rendered["default"], "PodDisruptionBudget")
    assert sorted(p["metadata"]["name"] for p in pdbs) == sorted(
        f"{RELEASE}-{c}" for c in COMPONENTS
    )
    assert all(p["spec"]["maxUnavailable"] == 1 for p in pdbs)
    assert of_kind(rendered["minimal"], "PodDisruptionBudget") == []


# ---- secrets and hooks -------------------------------------------------------------------------


def _secret_refs(docs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    refs = []
    for obj, spec in pod_specs(docs):
        for container in spec["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.append((obj["metadata"]["name"], ref["name"], ref["key"]))
    return refs


def _all_secret_refs(docs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(owner, Secret, key) of every container env and KEDA TriggerAuthentication reference."""
    refs = _secret_refs(docs)
    for auth in of_kind(docs, "TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            refs.append((auth["metadata"]["name"], ref["name"], ref["key"]))
    return refs


@pytest.mark.parametrize("name", ALL_SETS)
def test_generated_secret_has_every_key(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    """Every key read from a Secret the chart makes is in that Secret."""
    docs = rendered[name]
    made = {s["metadata"]["name"]: s["stringData"] for s in of_kind(docs, "Secret")}
    refs = _all_secret_refs(docs)
    assert refs
    if "existingSecret" in values_set(name).get("secrets", {}):
        assert made == {}
        return
    assert len(made[RELEASE]["service-secret"]) >= 32
    for owner, secret, key in refs:
        if secret == "otel-auth":  # extraEnvVars naming a Secret of the operator's
            continue
        assert secret in made, (owner, secret)
        assert key in made[secret], (owner, secret, key)


def test_a_component_database_url_lands_in_the_generated_secret(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["everything"]
    secret = one(docs, "Secret", RELEASE)["stringData"]
    assert secret["auth-database-url"].startswith("postgresql://mediaflow_auth:")
    refs = {owner: key for owner, _, key in _secret_refs(docs) if key.endswith("database-url")}
    assert refs[f"{RELEASE}-auth"] == "auth-database-url"
    assert refs[f"{RELEASE}-gateway"] == "database-url"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"auth": {"databaseUrlSecretKey": "auth-database-url"}}, "secrets.databaseUrls.auth"),
        (
            {"secrets": {"databaseUrls": {"worker": "postgresql://w@db/mediaflow"}}},
            "worker.databaseUrlSecretKey is empty",
        ),
        (
            {
                "worker": {"databaseUrlSecretKey": "amqp-url"},
                "secrets": {"databaseUrls": {"worker": "postgresql://w@db/mediaflow"}},
            },
            "already one of secrets.keys",
        ),
    ],
)
def test_component_database_url_without_its_value_fails(
    chart: helm_python.Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=message):
        render_raw(chart, installable(values))


def test_component_database_url_key_from_an_existing_secret(chart: helm_python.Chart) -> None:
    docs = render(
        chart,
        {
            "secrets": {"existingSecret": "mediaflow-credentials"},
            "auth": {"databaseUrlSecretKey": "auth-database-url"},
        },
    )
    assert ("mediaflow-auth", "mediaflow-credentials", "auth-database-url") in _secret_refs(docs)


def test_existing_secret_replaces_the_generated_one(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["existing-secret"]
    assert of_kind(docs, "Secret") == []
    refs = _secret_refs(docs)
    assert refs
    assert {name for _, name, _ in refs} == {"mediaflow-credentials"}
    keda = render_everything_with_existing_secret()
    auth = one(keda, "TriggerAuthentication", f"{RELEASE}-worker")
    assert auth["spec"]["secretTargetRef"][0]["name"] == "mediaflow-credentials"


_SERVICE_SECRET_MISSING = r"secrets\.serviceSecret \(SERVICE_SECRET\) is required"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, _SERVICE_SECRET_MISSING),
        ({"secrets": {"serviceSecret": ""}}, _SERVICE_SECRET_MISSING),
        (
            {"secrets": {"databaseUrl": "postgresql://mediaflow@postgresql:5432/mediaflow"}},
            r"secrets\.databaseUrl \(DATABASE_URL\) has no password",
        ),
        (
            {"secrets": {"databaseUrl": "postgresql://mediaflow:@postgresql:5432/mediaflow"}},
            r"secrets\.databaseUrl \(DATABASE_URL\) has no password",
        ),
        (
            {"secrets": {"migrationsDatabaseUrl": "postgresql://owner@postgresql/mediaflow"}},
            r"secrets\.migrationsDatabaseUrl \(the migrations DATABASE_URL\) has no password",
        ),
        (
            {
                "auth": {"databaseUrlSecretKey": "auth-database-url"},
                "secrets": {"databaseUrls": {"auth": "postgresql://auth@postgresql/mediaflow"}},
            },
            r"secrets\.databaseUrls\.auth \(auth's DATABASE_URL\) has no password",
        ),
        (
            {"secrets": {"amqpUrl": "amqp://rabbitmq:5672/"}},
            r"secrets\.amqpUrl \(AMQP_URL\) has no password",
        ),
        (
            {"secrets": {"amqpUrl": "amqp://mediaflow@rabbitmq:5672/"}},
            r"secrets\.amqpUrl \(AMQP_URL\) has no password",
        ),
        (
            {"secrets": {"s3AccessKeyId": ""}},
            r"secrets\.s3AccessKeyId is required \(S3_ACCESS_KEY_ID\)",
        ),
        (
            {"secrets": {"s3SecretAccessKey": ""}},
            r"secrets\.s3SecretAccessKey is required \(S3_SECRET_ACCESS_KEY\)",
        ),
    ],
)
def test_a_missing_credential_fails_the_render_naming_it(
    chart: helm_python.Chart, values: dict[str, Any], message: str
) -> None:
    """No install "succeeds" with pods that cannot reach their dependencies."""
    start = values_set("default") if values else {}
    with pytest.raises(helm_python.HelmRenderError, match=message):
        render_raw(chart, merge(start, values))


def test_credentials_that_are_present_pass(chart: helm_python.Chart) -> None:
    # libpq's password= parameter counts; a cloud role stands in for the S3 keys
    values = {
        "secrets": {
            "databaseUrl": "postgresql://mediaflow@postgresql/mediaflow?password=pw",
            "s3AccessKeyId": "",
            "s3SecretAccessKey": "",
        },
        "config": {"s3": {"useRole": True}},
    }
    assert render(chart, installable(values))
    # a Secret of the operator's own is not the chart's to check
    assert render(chart, {"secrets": {"existingSecret": "mediaflow-credentials"}})


def _secret_and_checksums(
    chart: helm_python.Chart, values: dict[str, Any]
) -> tuple[dict[str, Any], set[str], set[str]]:
    docs = render(chart, values)
    annotations = [
        d["spec"]["template"]["metadata"]["annotations"] for d in of_kind(docs, "Deployment")
    ]
    assert len(annotations) == len(COMPONENTS)
    return (
        one(docs, "Secret", RELEASE),
        {a["checksum/secret"] for a in annotations},
        {a["checksum/config"] for a in annotations},
    )


def test_two_renders_give_the_same_secret(chart: helm_python.Chart) -> None:
    """What `helm template` (Argo CD, Flux) renders is stable: nothing random, no lookup."""
    values = values_set("everything")
    first = render(chart, values)
    second = render(chart, values)
    assert of_kind(first, "Secret") == of_kind(second, "Secret")
    assert [d for d in first if d["kind"] == "Deployment"] == [
        d for d in second if d["kind"] == "Deployment"
    ]
    for template in (CHART / "templates").rglob("*"):
        if template.is_file():
            generators = re.findall(
                r"\b(lookup|rand[A-Z]\w*|uuidv4|genPrivateKey|genCA)\b", template.read_text()
            )
            assert generators == [], template.name


def test_checksum_annotations_follow_the_secret_and_the_config(chart: helm_python.Chart) -> None:
    base = values_set("default")
    secret, secret_sums, config_sums = _secret_and_checksums(chart, base)
    assert len(secret_sums) == 1
    assert len(config_sums) == 1
    rotated = merge(base, {"secrets": {"serviceSecret": "rotated-service-secret-0123456789abcdef"}})
    secret2, secret_sums2, config_sums2 = _secret_and_checksums(chart, rotated)
    assert secret2 != secret
    assert secret_sums2.isdisjoint(secret_sums)  # every pod restarts
    assert config_sums2 == config_sums
    relogged = merge(base, {"config": {"logLevel": "debug"}})
    _, secret_sums3, config_sums3 = _secret_and_checksums(chart, relogged)
    assert secret_sums3 == secret_sums
    assert config_sums3.isdisjoint(config_sums)
    # with a Secret of the operator's, the chart cannot see its contents: no checksum
    existing = render(chart, {"secrets": {"existingSecret": "mediaflow-credentials"}})
    for deployment in of_kind(existing, "Deployment"):
        assert "checksum/secret" not in deployment["spec"]["template"]["metadata"]["annotations"]


def render_everything_with_existing_secret() -> list[dict[str, Any]]:
    values = values_set("everything")
    values["secrets"] = {"existingSecret": "mediaflow-credentials"}
    chart = helm_python.Chart.load(str(CHART))
    try:
        return render(chart, values)
    finally:
        chart.close()


def test_migrations_job_is_a_pre_install_and_pre_upgrade_hook(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["default"]
    job = one(docs, "Job", f"{RELEASE}-migrations")
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    (container,) = spec["containers"]
    assert container["command"] == ["mediaflow-migrate"]
    env = {e["name"]: e for e in container["env"]}
    ref = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    # On first install the release's own Secret and ServiceAccounts do not exist yet:
    # the Job's must be hooks too, created before it.
    job_weight = int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    for kind, name in (("Secret", ref["name"]), ("ServiceAccount", spec["serviceAccountName"])):
        dependency = one(docs, kind, name)
        assert set(dependency["metadata"]["annotations"]["helm.sh/hook"].split(",")) == hooks
        assert int(dependency["metadata"]["annotations"]["helm.sh/hook-weight"]) < job_weight
        assert ref["key"] in dependency.get("stringData", {ref["key"]: ""})
    # with an existing Secret, the Job reads it directly
    existing = one(rendered["existing-secret"], "Job", f"{RELEASE}-migrations")
    ref = existing["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"][
        "secretKeyRef"
    ]
    assert ref == {"name": "mediaflow-credentials", "key": "database-url"}
    # a separate migrations DSN (a role with DDL rights) when configured
    everything = one(rendered["everything"], "Secret", f"{RELEASE}-migrations")
    assert everything["stringData"]["database-url"].startswith("postgresql://mediaflow_owner:")


def test_helm_test_checks_the_gateway_readyz(rendered: dict[str, list[dict[str, Any]]]) -> None:
    pod = one(rendered["default"], "Pod", f"{RELEASE}-test-readyz")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["containers"][0]["command"][-1] == f"http://{RELEASE}-gateway:8102/readyz"
    gateway = one(rendered["default"], "Service", f"{RELEASE}-gateway")
    assert gateway["spec"]["ports"][0]["port"] == 8102


# ---- network policies --------------------------------------------------------------------------


def _policy(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    return one(docs, "NetworkPolicy", f"{RELEASE}-{component}")


def _pod_labels(docs: list[dict[str, Any]], component: str) -> dict[str, str]:
    return one(docs, "Deployment", f"{RELEASE}-{component}")["spec"]["template"]["metadata"][
        "labels"
    ]


def test_only_gateway_and_notifier_reach_auth_in_cluster(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["everything"]
    policy = _policy(docs, "auth")
    assert (
        policy["spec"]["podSelector"]["matchLabels"]
        == one(docs, "Deployment", f"{RELEASE}-auth")["spec"]["selector"]["matchLabels"]
    )
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    allowed_in_namespace = set()
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            if "namespaceSelector" in peer:
                # other namespaces: only the ingress controller and Prometheus
                assert peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] in (
                    "ingress-nginx",
                    "monitoring",
                )
                continue
            for component in COMPONENTS:
                if _matches(peer["podSelector"]["matchLabels"], _pod_labels(docs, component)):
                    allowed_in_namespace.add(component)
    assert allowed_in_namespace == {"gateway", "notifier"}
    # the internal port admits gateway and notifier alone; the others reach only `http`
    for rule in policy["spec"]["ingress"]:
        ports = [p["port"] for p in rule["ports"]]
        from_callers = all("namespaceSelector" not in peer for peer in rule["from"])
        assert ports == (["internal"] if from_callers else ["http"]), rule
    service = one(docs, "Service", f"{RELEASE}-auth")
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "http": (8101, "http"),
        "internal": (8111, "internal"),
    }
    auth_labels = _pod_labels(docs, "auth")
    for caller in ("gateway", "notifier"):
        to_auth = [
            rule
            for rule in _policy(docs, caller)["spec"]["egress"]
            for peer in rule["to"]
            if "podSelector" in peer and _matches(peer["podSelector"]["matchLabels"], auth_labels)
        ]
        assert [r["ports"] for r in to_auth] == [[{"port": 8111, "protocol": "TCP"}]], caller


def test_worker_egress_is_internet_but_not_cluster(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["everything"]
    policy = _policy(docs, "worker")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    blocks = [
        peer["ipBlock"]
        for rule in policy["spec"]["egress"]
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    ]
    internet = [b for b in blocks if b["cidr"] == "0.0.0.0/0"]
    assert len(internet) == 1
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(
        internet[0]["except"]
    )
    assert any(b["cidr"] == "::/0" and "fc00::/7" in b["except"] for b in blocks)
    # its dependencies stay reachable: the PostgreSQL address given in the values
    assert {"cidr": "10.20.0.10/32"} in blocks
    # with every dependency pinned by `to`, no egress rule is open to any address
    assert all(rule.get("to") for rule in policy["spec"]["egress"])
    # and it may not talk to auth (no egress rule selects auth's pods)
    auth_labels = _pod_labels(docs, "auth")
    for rule in policy["spec"]["egress"]:
        for peer in rule.get("to", []):
            if "podSelector" in peer and "namespaceSelector" not in peer:
                assert not _matches(peer["podSelector"]["matchLabels"], auth_labels)
    assert of_kind(rendered["default"], "NetworkPolicy") == []


@pytest.mark.parametrize("dependency", ["postgresql", "rabbitmq", "s3"])
def test_worker_policy_refuses_an_unpinned_dependency(
    chart: helm_python.Chart, dependency: str
) -> None:
    """An empty `to` would open the dependency's ports to every address in the cluster."""
    values = values_set("everything")
    values["networkPolicy"]["dependencies"][dependency]["to"] = []
    unpinned = rf"networkPolicy\.dependencies\.{dependency}\.to is empty"
    with pytest.raises(helm_python.HelmRenderError, match=unpinned):
        render_raw(chart, values)
    with pytest.raises(helm_python.HelmRenderError, match="worker's NetworkPolicy"):
        render_raw(chart, installable({"networkPolicy": {"enabled": True}}))


def _readme_production_values() -> dict[str, Any]:
    text = (REPO / "deploy" / "README.md").read_text()
    block = text.split("`values-production.yaml`", 1)[1].split("```yaml\n", 1)[1]
    values: dict[str, Any] = yaml.safe_load(block.split("```", 1)[0])
    return values


def test_readme_production_values_pin_worker_egress(chart: helm_python.Chart) -> None:
    values = _readme_production_values()
    assert values["networkPolicy"]["enabled"] is True
    docs = render(chart, values)
    worker = _policy(docs, "worker")
    assert all(rule.get("to") for rule in worker["spec"]["egress"])
    # an "any address" block (external S3, the internet) leaves out the private ranges
    private = {"0.0.0.0/0": "10.0.0.0/8", "::/0": "fc00::/7"}
    blocks = [p["ipBlock"] for r in worker["spec"]["egress"] for p in r["to"] if "ipBlock" in p]
    for block in blocks:
        if block["cidr"] in private:
            assert private[block["cidr"]] in block["except"], block


def test_every_pod_has_a_network_policy(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["everything"]
    policies = of_kind(docs, "NetworkPolicy")
    for obj, _ in pod_specs(docs):
        labels = (
            obj["spec"]["template"]["metadata"]["labels"]
            if obj["kind"] != "Pod"
            else obj["metadata"]["labels"]
        )
        if labels["app.kubernetes.io/component"] == "test":
            continue
        assert any(_matches(p["spec"]["podSelector"]["matchLabels"], labels) for p in policies), (
            obj["metadata"]["name"]
        )


# ---- monitoring --------------------------------------------------------------------------------


def test_service_monitors_scrape_existing_ports(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["everything"]
    monitors = of_kind(docs, "ServiceMonitor")
    services = of_kind(docs, "Service")
    own = [
        m
        for m in monitors
        if m["metadata"]["labels"].get("app.kubernetes.io/component") in COMPONENTS
    ]
    assert len(own) == 4
    for monitor in own:
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
        selected = [
            s
            for s in services
            if _matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert len(selected) == 1, monitor["metadata"]["name"]
        port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"
    (rabbit,) = [m for m in monitors if m not in own]
    assert rabbit["spec"]["endpoints"][0]["path"] == "/metrics/detailed"
    assert "queue_coarse_metrics" in rabbit["spec"]["endpoints"][0]["params"]["family"]


def _rules(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (rule,) = of_kind(docs, "PrometheusRule")
    return rule


def exported_metric_names() -> set[str]:
    """Sample names the four processes expose, from their own prometheus-client registry."""
    for module in ENTRY_MODULES:
        importlib.import_module(module)
    from prometheus_client import REGISTRY

    suffixes = {
        "counter": ["_total", "_created"],
        "gauge": [""],
        "histogram": ["_bucket", "_sum", "_count", "_created"],
        "summary": ["", "_sum", "_count", "_created"],
        "info": ["_info"],
    }
    names = set()
    for family in REGISTRY.collect():
        names |= {family.name + suffix for suffix in suffixes.get(family.type, [""])}
    return names


def test_alert_rules_parse_and_name_only_exported_metrics(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    rule = _rules(rendered["everything"])
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    exported = exported_metric_names() | set(EXTERNAL_METRICS)
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert {a["alert"] for a in alerts} >= {
        "MediaflowWorkerFailureRateHigh",
        "MediaflowJobQueueBacklogOld",
        "MediaflowDeadLetterQueueNotEmpty",
        "MediaflowOutboxBacklog",
        "MediaflowNotifierDeliveryLagHigh",
        "MediaflowAuthUnavailable",
        "MediaflowRabbitMQMetricsAbsent",
    }
    for alert in alerts:
        names = metric_names(alert["expr"])  # raises ValueError on bad PromQL
        assert names, alert["alert"]
        assert names <= exported, (alert["alert"], names - exported)
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["labels"]["team"] == "media"
        assert alert["annotations"]["summary"]
        assert alert["annotations"]["description"]
    # the RabbitMQ selector reaches the queue matchers
    dlq = next(a for a in alerts if a["alert"] == "MediaflowDeadLetterQueueNotEmpty")
    assert 'queue="media.jobs.dlq",vhost="/"' in dlq["expr"]


def test_every_alert_has_a_runbook_in_the_repository(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    base = yaml.safe_load((CHART / "values.yaml").read_text())["prometheusRule"]["runbookBaseUrl"]
    alerts = [r for g in _rules(rendered["everything"])["spec"]["groups"] for r in g["rules"]]
    runbooks = REPO / "docs" / "runbooks"
    pages = set()
    for alert in alerts:
        url = alert["annotations"]["runbook_url"]
        assert url.startswith(base + "/"), alert["alert"]
        page = runbooks / url.removeprefix(base + "/")
        assert page.is_file(), (alert["alert"], url)
        assert page.read_text().startswith(f"# {alert['alert']}\n"), page.name
        pages.add(page.name)
    # one page per alert, each listed in the index
    assert pages == {p.name for p in runbooks.glob("*.md")} - {"README.md"}
    index = (runbooks / "README.md").read_text()
    for alert in alerts:
        assert alert["alert"] in index


def test_rabbitmq_metrics_absent_alert_watches_the_series_the_queue_alerts_read(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    alerts = {
        r["alert"]: r for g in _rules(rendered["everything"])["spec"]["groups"] for r in g["rules"]
    }
    absent = alerts["MediaflowRabbitMQMetricsAbsent"]["expr"]
    assert absent.startswith("absent(")
    # the same selector as the backlog alert's, so a selector that matches nothing fires it
    (selector,) = re.findall(r"absent\(rabbitmq_detailed_queue_messages_ready\{([^}]*)\}", absent)
    assert f"{{{selector}}}" in alerts["MediaflowJobQueueBacklogOld"]["expr"]
    assert selector.strip() == 'queue="media.jobs",vhost="/"'


def test_metric_check_rejects_unknown_names() -> None:
    exported = exported_metric_names() | set(EXTERNAL_METRICS)
    assert "worker_jobs_total" in exported
    assert "notifier_delivery_lag_seconds_bucket" in exported
    assert not metric_names("rate(worker_jobz_total[5m])") <= exported
    with pytest.raises(ValueError, match="parenthesis"):
        metric_names("sum(rate(worker_jobs_total[5m])")


def test_alerts_with_promtool(chart: helm_python.Chart, tmp_path: Path) -> None:
    """`promtool check rules` and the unit tests in alerts_test.yaml. promtool comes with
    Debian's `prometheus` package; where it is missing, every expression and template is
    still checked by a PromQL parser, and every alert must have a unit test waiting."""
    docs = render(chart, installable({"prometheusRule": {"enabled": True}}))
    spec = _rules(docs)["spec"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.copy(Path(__file__).with_name("alerts_test.yaml"), tmp_path / "alerts_test.yaml")
    tests = yaml.safe_load((tmp_path / "alerts_test.yaml").read_text())
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"]}
    alerts = {r["alert"] for group in spec["groups"] for r in group["rules"]}
    assert tested == alerts
    for group in spec["groups"]:
        for alert in group["rules"]:
            metric_names(alert["expr"])
    for args in (["check", "rules", "rules.yaml"], ["test", "rules", "alerts_test.yaml"]):
        result = subprocess.run(
            [promtool(), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_is_valid_and_names_only_exported_metrics(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["everything"]
    configmap = one(docs, "ConfigMap", f"{RELEASE}-dashboards")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"]["grafana_folder"] == "mediaflow"
    assert set(configmap["data"]) == {"mediaflow.json"}
    dashboard = json.loads(configmap["data"]["mediaflow.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "mediaflow.json").read_text())
    assert dashboard["uid"]
    assert dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "release", "amqp_namespace"} <= variables
    exported = exported_metric_names() | set(EXTERNAL_METRICS)
    seen: set[str] = set()
    exprs = list(dashboard_exprs(dashboard))
    assert len(exprs) >= 15
    for title, expr in exprs:
        names = metric_names(substitute_grafana_variables(expr))
        assert names <= exported, (title, names - exported)
        seen |= names
    # the metrics the alerts are about are on the dashboard too
    assert {
        "worker_jobs_total",
        "worker_failures_total",
        "worker_stage_duration_seconds_bucket",
        "worker_bytes_streamed_total",
        "session_checks_total",
        "outbox_backlog_messages",
        "notifier_connected_clients",
        "notifier_delivery_lag_seconds_bucket",
        "rabbitmq_detailed_queue_messages_ready",
    } <= seen
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
    # the pods themselves: CPU, memory, restarts, replicas
    assert {
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "kube_pod_container_status_restarts_total",
        "kube_deployment_status_replicas_available",
        "kube_deployment_spec_replicas",
    } <= seen
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"CPU per pod", "Memory per pod", "Container restarts (1h)", "Replicas"} <= titles
    # panels do not overlap on the grid
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, panel["title"]
        cells |= mine


def test_notes_render_for_every_values_set(chart: helm_python.Chart) -> None:
    for name in ALL_SETS:
        notes = render_raw(chart, values_set(name))[f"{CHART.name}/templates/NOTES.txt"]
        assert "helm test mediaflow" in notes
        if name == "existing-secret":
            assert 'Credentials come from Secret "mediaflow-credentials"' in notes
        else:
            assert "WARNING: credentials come from values" in notes


def test_deploy_readme_states_the_sse_heartbeat_default() -> None:
    from mediaflow_notifier.settings import NotifierSettings

    default = NotifierSettings.model_fields["sse_heartbeat_seconds"].default
    text = " ".join((REPO / "deploy" / "README.md").read_text().split())
    stated = re.findall(r"`: ping` every (\d+) s", text)
    assert stated == [f"{default:g}"]


# ---- chart metadata and README -----------------------------------------------------------------


def _chart_yaml() -> dict[str, Any]:
    chart: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return chart


def test_chart_metadata_for_artifact_hub() -> None:
    meta = _chart_yaml()
    source = meta["sources"][0]
    assert source.startswith("https://github.com/")
    # the icon is a file of the repository, served raw
    raw = source.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    assert meta["icon"].startswith(raw)
    assert (REPO / meta["icon"].removeprefix(raw)).is_file()
    annotations = meta["annotations"]
    changes = yaml.safe_load(annotations["artifacthub.io/changes"])
    assert changes
    assert all(
        c["kind"] in {"added", "changed", "deprecated", "removed", "fixed", "security"}
        for c in changes
    )
    assert all(c["description"] for c in changes)
    links = yaml.safe_load(annotations["artifacthub.io/links"])
    for link in links:
        assert link["url"].startswith(source + "/"), link
        path = link["url"].removeprefix(source + "/").split("/", 2)[-1]
        assert (REPO / path).exists(), link
    images = yaml.safe_load(annotations["artifacthub.io/images"])
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert images == [
        {"name": "mediaflow", "image": f"{values['image']['repository']}:{meta['appVersion']}"}
    ]
    # the runbooks live in the repository the chart names as its source
    base = values["prometheusRule"]["runbookBaseUrl"]
    assert base == f"{source}/blob/main/docs/runbooks"


def test_helm_show_readme_is_the_chart_readme() -> None:
    readme = helm_python.show(str(CHART), output_format="readme")
    assert readme.startswith("# mediaflow Helm chart")
    assert "| `secrets.existingSecret` |" in readme


def test_chart_readme_values_table_is_current() -> None:
    from devstack import chart_doc

    text = (CHART / "README.md").read_text()
    assert chart_doc.with_table(text) == text, "run: python -m devstack.chart_doc --write"
    table = chart_doc.markdown()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    # every top-level value is in the table, itself or through its keys
    keys = [line.split("`")[1] for line in table.splitlines()[2:]]
    assert {k.split(".")[0] for k in keys} == set(values)
    for key in ("secrets.existingSecret", "config.s3.useRole", "worker.shutdownGraceSeconds"):
        assert key in keys


def test_chart_doc_reads_described_keys_only() -> None:
    from devstack import chart_doc

    text = "a:\n  # -- the b\n  # on two lines\n  b: 1\n  c: 2\n# -- the d\nd: [x]\n"
    assert chart_doc.documented_keys(text) == [("a.b", "the b on two lines"), ("d", "the d")]


# ---- image and skaffold ------------------------------------------------------------------------


def _dockerfile() -> list[str]:
    text = (REPO / "Dockerfile").read_text()
    return [
        line.strip()
        for line in text.replace("\\\n", " ").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_dockerfile_is_multi_stage_non_root_and_frozen() -> None:
    lines = _dockerfile()
    froms = [line for line in lines if line.startswith("FROM ")]
    assert len(froms) >= 3  # uv, builder, runtime
    args = dict(line[4:].split("=", 1) for line in lines if line.startswith("ARG ") and "=" in line)
    # an exact version and the digest of its multi-arch index, never a floating tag
    assert re.fullmatch(
        r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", args["PYTHON_IMAGE"]
    ), args["PYTHON_IMAGE"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["UV_VERSION"])
    assert froms[-1].startswith("FROM ${PYTHON_IMAGE}")
    syncs = [line for line in lines if "uv sync" in line]
    assert syncs
    for sync in syncs:
        assert {"--frozen", "--no-dev", "--no-editable"} <= set(sync.split()), sync
    assert any("UV_COMPILE_BYTECODE=1" in line for line in lines)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, "no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) >= 10000
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["securityContext"]["runAsUser"] == int(uid)
    # the runtime stage takes only the virtualenv from the builder
    runtime = lines[lines.index(froms[-1]) :]
    copies = [line for line in runtime if line.startswith("COPY")]
    assert copies == ["COPY --from=builder /app/.venv /app/.venv"]
    # every workspace member's pyproject reaches the dependency layer
    members = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["uv"]["workspace"][
        "members"
    ]
    member_dirs = [
        p.parent.relative_to(REPO).as_posix()
        for m in members
        for p in REPO.glob(f"{m}/pyproject.toml")
    ]
    for member in member_dirs:
        assert any(line.startswith(f"COPY {member}/pyproject.toml") for line in lines), member


def test_dockerignore_keeps_tests_and_local_state_out() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    assert {"!pyproject.toml", "!uv.lock", "!libs/", "!services/", "!cli/"} <= set(patterns)
    assert {"**/tests/", "**/.venv/", "**/__pycache__/"} <= set(patterns)


def _skaffold() -> dict[str, Any]:
    return yaml.safe_load((REPO / "skaffold.yaml").read_text())


def _releases(config: dict[str, Any]) -> list[dict[str, Any]]:
    releases = list(config["deploy"]["helm"]["releases"])
    for profile in config.get("profiles", []):
        releases += profile.get("deploy", {}).get("helm", {}).get("releases", [])
    return releases


def test_skaffold_builds_the_image_the_chart_deploys(chart: helm_python.Chart) -> None:
    config = _skaffold()
    assert config["apiVersion"].startswith("skaffold/v4")
    assert config["kind"] == "Config"
    artifacts = config["build"]["artifacts"]
    assert [a["image"] for a in artifacts] == ["mediaflow"]
    assert artifacts[0]["docker"]["dockerfile"] == "Dockerfile"
    assert (REPO / artifacts[0]["context"] / "Dockerfile").is_file()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["repository"] == artifacts[0]["image"]
    sanitized = {
        a["image"].replace("/", "_").replace("-", "_").replace(".", "_") for a in artifacts
    }
    for release in _releases(config):
        assert (REPO / release["chartPath"]).resolve() == CHART
        templates = release["setValueTemplates"]
        for key in templates:  # every key names a value the chart has
            node = values
            for part in key.split("."):
                assert part in node, key
                node = node[part]
        for name in sanitized:
            assert templates["image.repository"] == f"{{{{.IMAGE_REPO_{name}}}}}"
            assert (
                templates["image.tag"] == f"{{{{.IMAGE_TAG_{name}}}}}@{{{{.IMAGE_DIGEST_{name}}}}}"
            )
        # the image reference the chart builds from what skaffold injects
        injected = {
            "image": {"repository": "registry.local/mediaflow", "tag": "abc123@sha256:" + "0" * 64}
        }
        docs = render(chart, installable(injected))
        images = {c["image"] for _, spec in pod_specs(docs) for c in spec["containers"]}
        assert images == {"registry.local/mediaflow:abc123@sha256:" + "0" * 64}


def test_skaffold_dev_profile_and_port_forwards(chart: helm_python.Chart) -> None:
    config = _skaffold()
    (dev,) = [p for p in config["profiles"] if p["name"] == "dev"]
    assert {"command": "dev"} in dev["activation"]
    forwards = {(f["resourceType"], f["resourceName"]): f for f in dev["portForward"]}
    assert forwards[("service", "ingress-nginx-controller")]["localPort"] == 8080
    docs_dev = None
    for release in dev["deploy"]["helm"]["releases"]:
        values: dict[str, Any] = {}
        for path in release["valuesFiles"]:
            values |= yaml.safe_load((REPO / path).read_text())
        docs_dev = render(chart, values)
    assert docs_dev is not None
    configmap = one(docs_dev, "ConfigMap", f"{RELEASE}-config")
    assert configmap["data"]["PUBLIC_URL"] == "http://127.0.0.1:8080"
    services = {s["metadata"]["name"]: s for s in of_kind(docs_dev, "Service")}
    for forward in [*config["portForward"], *dev["portForward"]]:
        if forward["namespace"] == "mediaflow" and forward["resourceType"] == "service":
            ports = [p["port"] for p in services[forward["resourceName"]]["spec"]["ports"]]
            assert forward["port"] in ports
    # the throwaway dependencies the dev profile deploys are valid Kubernetes objects
    images = []
    for path in dev["manifests"]["rawYaml"]:
        for doc in yaml.safe_load_all((REPO / path).read_text()):
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            if doc["kind"] == "Deployment":
                images += [c["image"] for c in doc["spec"]["template"]["spec"]["containers"]]
    (seaweedfs,) = [i for i in images if "seaweedfs" in i]
    assert re.fullmatch(r"chrislusf/seaweedfs:\d+\.\d+@sha256:[0-9a-f]{64}", seaweedfs)
    assert not any(i.endswith(":latest") or ":" not in i for i in images), images


def test_a_role_replaces_the_s3_keys_on_the_s3_users_only(chart: helm_python.Chart) -> None:
    """With config.s3.useRole no pod reads static keys (botocore's credential chain
    takes over), the IRSA annotation lands on the gateway's and worker's ServiceAccounts
    alone, and the S3 settings reach the ConfigMap."""
    role = {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/mediaflow-s3"}
    docs = render(
        chart,
        installable(
            {
                "secrets": {"s3AccessKeyId": "", "s3SecretAccessKey": ""},
                "config": {
                    "s3": {
                        "useRole": True,
                        "serviceAccountAnnotations": role,
                        "addressingStyle": "virtual",
                        "sse": "aws:kms",
                        "sseKmsKeyId": "arn:aws:kms:eu-west-1:111122223333:key/k",
                        "copyThresholdBytes": 1073741824,
                    }
                },
            }
        ),
    )
    for component in ("auth", "gateway", "notifier", "worker"):
        account = one(docs, "ServiceAccount", f"{RELEASE}-{component}")
        annotations = account["metadata"].get("annotations", {})
        assert annotations == (role if component in ("gateway", "worker") else {}), component
        deployment = one(docs, "Deployment", f"{RELEASE}-{component}")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        names = {e["name"] for e in container.get("env", [])}
        assert not names & {"S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"}, component
    secret = one(docs, "Secret", RELEASE)
    assert not set(secret["stringData"]) & {"s3-access-key-id", "s3-secret-access-key"}
    data = one(docs, "ConfigMap", f"{RELEASE}-config")["data"]
    assert data["S3_ADDRESSING_STYLE"] == "virtual"
    assert (data["S3_SSE"], data["S3_SSE_KMS_KEY_ID"]) == (
        "aws:kms",
        "arn:aws:kms:eu-west-1:111122223333:key/k",
    )
    assert data["S3_COPY_THRESHOLD_BYTES"] == "1073741824"
