"""Render the chart README's values table from values.yaml, where every documented key has a
``# -- description`` comment above it (helm-docs' convention), so the table's keys and
defaults are the chart's own (``python -m devstack.chart_doc --write README.md``)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "mediaflow"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?P<rest>.*)$")


def documented_keys(text: str) -> list[tuple[str, str]]:
    """(dotted key, description) of every key preceded by a ``# --`` comment, in file order."""
    found = []
    path: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped[1:].strip())
            continue
        match = _KEY.match(line)
        if not match or stripped.startswith("-"):
            pending = None if not stripped else pending
            continue
        indent = len(match["indent"])
        while path and path[-1][0] >= indent:
            path.pop()
        path.append((indent, match["key"]))
        if pending is not None:
            found.append((".".join(key for _, key in path), " ".join(pending)))
            pending = None
    return found


def _value(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node[part]
    return node


def _render(value: Any) -> str:
    text = json.dumps(value, separators=(", ", ": "))
    return f"`{text}`".replace("|", "\\|")


def markdown(chart: Path = CHART) -> str:
    text = (chart / "values.yaml").read_text()
    values = yaml.safe_load(text)
    lines = ["| key | default | description |", "| --- | --- | --- |"]
    for key, doc in documented_keys(text):
        escaped = doc.replace("|", "\\|")
        lines.append(f"| `{key}` | {_render(_value(values, key))} | {escaped} |")
    return "\n".join(lines) + "\n"


START, END = "<!-- values:start -->", "<!-- values:end -->"


def with_table(readme: str, chart: Path = CHART) -> str:
    """``readme`` with the text between the values markers replaced by the current table."""
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{markdown(chart)}{END}{tail}"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:
        target = Path(sys.argv[2])
        target.write_text(with_table(target.read_text()))
    else:
        sys.stdout.write(markdown())
