"""The machine-readable side of every bench script: rows of (measured, baseline, ratio,
target, pass/fail) that a script writes with ``--json PATH`` and ``bench/all.py`` collects
into one table. Each script still prints its own tables when run alone."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Result:
    name: str  # what was measured, e.g. "gateway submit throughput"
    measured: str  # the measured value, with its unit
    baseline: str  # what it is compared with, measured in the same run ("" for none)
    ratio: str  # measured / baseline, as printed ("" for none)
    target: str  # the target in words, e.g. ">= 0.40 x bare"
    passed: bool | None  # None: reported, no target


def write_json(path: str | None, bench: str, results: list[Result]) -> None:
    """Write the results to ``path`` (no-op without one)."""
    if not path:
        return
    Path(path).write_text(
        json.dumps({"bench": bench, "results": [asdict(r) for r in results]}, indent=2) + "\n"
    )


def read_json(path: Path) -> list[Result]:
    data = json.loads(path.read_text())
    return [Result(**row) for row in data["results"]]
