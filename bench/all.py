"""Every benchmark, one after another, collected into one table (what ``make bench`` runs).

    uv run python bench/all.py [--only gateway_submit e2e_latency ...]

Each script runs as it does alone, in a process of its own, with ``--json`` pointing at a
file this collects; its own tables go to ``.run/bench/<script>.log``. Prints the date (UTC),
the machine (cores, CPU model, RAM) and one table: each measurement next to its baseline
from the same run, the ratio, the target and PASS/FAIL. Exits non-zero when any target is
missed or a script fails.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
from results import Result, read_json

BENCH_DIR = Path(__file__).resolve().parent
LOG_DIR = BENCH_DIR.parent / ".run" / "bench"
# The order of the table's rows.
SCRIPTS = (
    "gateway_submit",
    "worker_throughput",
    "worker_rss",
    "media_vs_ytdlp",
    "media_rss",
    "sse_bench",
    "e2e_latency",
    "resume_drops",
)


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    ram = psutil.virtual_memory().total / 1024**3
    return f"{os.cpu_count()} cores, {model}, {ram:.1f} GiB RAM, {platform.platform()}"


def run(script: str) -> tuple[list[Result], int, float]:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    out, log = LOG_DIR / f"{script}.json", LOG_DIR / f"{script}.log"
    out.unlink(missing_ok=True)
    print(
        f"running bench/{script}.py (output in {log.relative_to(BENCH_DIR.parent)}) …",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    with log.open("w") as sink:
        code = subprocess.run(
            [sys.executable, str(BENCH_DIR / f"{script}.py"), "--json", str(out)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode
    seconds = time.monotonic() - started
    if not out.exists():
        crashed = Result(
            f"bench/{script}.py",
            f"exit {code}, no results",
            "",
            "",
            f"see {log.relative_to(BENCH_DIR.parent)}",
            False,
        )
        return [crashed], code, seconds
    return read_json(out), code, seconds


def verdict(passed: bool | None) -> str:
    return "" if passed is None else ("PASS" if passed else "FAIL")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these")
    args = parser.parse_args()
    started = datetime.now(UTC)
    rows: list[Result] = []
    failed: list[str] = []
    for script in args.only or SCRIPTS:
        results, code, seconds = run(script)
        print(f"  … {seconds:.0f} s, exit {code}", file=sys.stderr, flush=True)
        rows.extend(results)
        if code != 0:
            failed.append(script)
    header = ("measurement", "measured", "baseline (same run)", "ratio", "target", "result")
    cells = [(r.name, r.measured, r.baseline, r.ratio, r.target, verdict(r.passed)) for r in rows]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
    print(f"\nmediaflow benchmarks, {started:%Y-%m-%d %H:%M} UTC")
    print(f"machine: {machine()}")
    print("command: make bench (uv run --frozen python bench/all.py)\n")
    for row in [header, tuple("-" * w for w in widths), *cells]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    misses = [r.name for r in rows if r.passed is False]
    print(
        f"\n{len(rows) - len(misses)} of {len(rows)} rows met or have no target; "
        f"scripts that exited non-zero: {', '.join(failed) or 'none'}"
    )
    return 1 if misses or failed else 0


if __name__ == "__main__":
    sys.exit(main())
