"""Offline validation of the custom resources the chart renders, against the OpenAPI schemas
of their CRDs (vendored under crds/, see crds/README.md for where each comes from).

An API server prunes or, with strict field validation (kubectl's default since 1.27),
rejects fields a structural schema does not name. JSON Schema allows them unless told
otherwise, so every object schema that lists `properties` and does not preserve unknown
fields is closed with `additionalProperties: false`, and OpenAPI's `nullable` becomes a
`null` type. CEL rules (`x-kubernetes-validations`) are not evaluated.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

CRD_DIR = Path(__file__).with_name("crds")


def _structural(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_structural(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _structural(value) for key, value in schema.items()}
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the structural schema, for every vendored CRD version."""
    found = {}
    for path in sorted(CRD_DIR.glob("*.json")):
        group, version, _ = path.stem.split("_")
        schema = json.loads(path.read_text())
        found[(f"{group}/{version}", _kind_of(path))] = _structural(schema)
    return found


def _kind_of(path: Path) -> str:
    names = {
        "httproute": "HTTPRoute",
        "servicemonitor": "ServiceMonitor",
        "prometheusrule": "PrometheusRule",
        "scaledobject": "ScaledObject",
        "triggerauthentication": "TriggerAuthentication",
    }
    return names[path.stem.split("_")[2]]


def kinds() -> set[str]:
    return {kind for _, kind in schemas()}


def validate(doc: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError if `doc` breaks its CRD's schema, KeyError if the
    chart renders a custom resource no vendored schema covers."""
    schema = schemas()[(doc["apiVersion"], doc["kind"])]
    jsonschema.Draft7Validator(schema).validate(copy.deepcopy(doc))
