"""Render the README's configuration table from the services' settings classes, so the
documented names and defaults are the ones the code reads (``python -m devstack.config_doc``)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from pydantic_core import PydanticUndefined

SETTINGS = {
    "auth": "mediaflow_auth.settings:AuthSettings",
    "gateway": "mediaflow_gateway.settings:GatewaySettings",
    "worker": "mediaflow_worker.settings:WorkerSettings",
    "notifier": "mediaflow_notifier.settings:NotifierSettings",
}


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _default(field: Any) -> str:
    if field.default is PydanticUndefined:
        return "**required**"
    if field.default is None:
        return "unset"
    if field.default == "":
        return "empty"
    return f"`{field.default}`"


def rows() -> list[tuple[str, str, str, str]]:
    """(variable, services, default, meaning), one per environment variable."""
    from mediaflow_libs.settings import ServiceSettings

    shared_docs = {name: field.description for name, field in ServiceSettings.model_fields.items()}
    found: dict[str, dict[str, Any]] = {}
    for service, path in SETTINGS.items():
        for name, field in _load(path).model_fields.items():
            entry = found.setdefault(name.upper(), {"services": [], "defaults": {}, "doc": ""})
            entry["services"].append(service)
            entry["defaults"][service] = _default(field)
            entry["doc"] = shared_docs.get(name) or entry["doc"] or (field.description or "")
    table = []
    for variable, entry in sorted(found.items()):
        defaults = entry["defaults"]
        if len(set(defaults.values())) == 1:
            default = next(iter(defaults.values()))
        else:
            default = ", ".join(f"{service} {value}" for service, value in defaults.items())
        services = (
            "all" if len(entry["services"]) == len(SETTINGS) else ", ".join(entry["services"])
        )
        table.append((variable, services, default, entry["doc"]))
    return table


def markdown() -> str:
    lines = ["| variable | read by | default | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{v}` | {s} | {d} | {m} |" for v, s, d, m in rows()]
    return "\n".join(lines) + "\n"


START, END = "<!-- config:start -->", "<!-- config:end -->"


def with_table(readme: str) -> str:
    """``readme`` with the text between the config markers replaced by the current table."""
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{markdown()}{END}{tail}"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:
        path = Path(sys.argv[2])
        path.write_text(with_table(path.read_text()))
    else:
        sys.stdout.write(markdown())
