"""Peak memory of a real worker process while it streams large sources to storage.

    uv run python bench/worker_rss.py [--sizes-mib 200 2048] [--limit-mib 80] [--spread-mib 8]

For each size, a fresh ``mediaflow-worker`` (default settings) streams one generated MP4
from an origin on 127.0.0.1 to storage while its RSS is sampled every 20 ms; its idle RSS
before the job is the baseline. Passes when every task succeeded with the right SHA-256,
the largest source's peak stays at or under ``--limit-mib``, and that peak is within
``--spread-mib`` of the smallest source's peak (memory does not grow with size). The
database, queues, bucket and source files are removed at the end; worker logs stay under
``.run/`` (ignored by git).

Where the memory goes (idle, measured with ``-X importtime`` and /proc RSS deltas): Python
with asyncio and OpenSSL ~19 MiB, pydantic with pydantic-settings ~17, aiohttp ~9,
structlog ~5, aio-pika ~3, asyncpg ~2, the OpenTelemetry SDK ~4, the rest ~3. What is gone
from earlier versions of the worker: aiobotocore with botocore (~26 MiB of modules, endpoint
tables and the S3 model; replaced by ``mediaflow_worker.objectstore``), Litestar with uvicorn
(~7; ``mediaflow_worker.probes``), rich (~3, pulled in by structlog), and the heap growth
glibc kept after freeing part buffers (``mediaflow_worker.memory``). During a job (~3.5 MiB
over idle): the origin sends Content-Length, so the parts (8 MiB, two in flight) pass through
from source to store, two chunks of 256 KiB queued per part, and no part is buffered whole
(buffered, two parts of 8 MiB peaked at ~81.5 MiB); the rest is the job's first-use heap.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass

from results import Result, write_json
from support import (
    Outcome,
    RssSampler,
    bench_world,
    idle_rss,
    mib,
    origin_process,
    print_table,
    submit_and_wait,
    worker_process,
    write_source,
)

from mediaflow_libs.settings import MIB


@dataclass(frozen=True)
class Run:
    size_mib: int
    idle: int
    peak: int
    outcome: Outcome
    stored_right: bool


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[200, 2048])
    parser.add_argument("--limit-mib", type=float, default=80)
    parser.add_argument("--spread-mib", type=float, default=8)
    parser.add_argument("--json", help="also write the results here (for bench/all.py)")
    args = parser.parse_args()
    sizes = sorted(args.sizes_mib)
    runs: list[Run] = []
    with bench_world("rss") as world:
        expected = {size: write_source(world, f"{size}.mp4", size) for size in sizes}
        with origin_process(world.origin_dir) as origin:
            for size in sizes:
                with worker_process(world) as pid:
                    idle = idle_rss(pid)
                    with RssSampler(pid) as sampler:
                        outcome = asyncio.run(
                            submit_and_wait(
                                world, f"{origin}/{size}.mp4", within=max(120.0, size / 2)
                            )
                        )
                stored_right = outcome.status == "succeeded" and outcome.sha256 == expected[size]
                runs.append(Run(size, idle, max(sampler.peak, idle), outcome, stored_right))

    largest, smallest = runs[-1], runs[0]
    under_limit = largest.peak <= args.limit_mib * MIB
    flat = largest.peak - smallest.peak <= args.spread_mib * MIB
    all_stored = all(run.stored_right for run in runs)
    print_table(
        "Worker RSS while streaming (fresh worker per size)",
        ("source", "outcome", "sha256", "idle RSS", "peak RSS", "peak - idle", "MiB/s"),
        [
            (
                f"{run.size_mib} MiB",
                run.outcome.status + (f" ({run.outcome.error})" if run.outcome.error else ""),
                "ok" if run.stored_right else "WRONG",
                mib(run.idle),
                mib(run.peak),
                mib(run.peak - run.idle),
                f"{run.size_mib / run.outcome.seconds:.0f}",
            )
            for run in runs
        ],
    )
    print_table(
        "Checks",
        ("check", "measured", "result"),
        [
            (
                f"peak RSS, {largest.size_mib} MiB source <= {args.limit_mib:.0f} MiB",
                mib(largest.peak),
                "PASS" if under_limit else "FAIL",
            ),
            (
                f"peak grows <= {args.spread_mib:.0f} MiB from {smallest.size_mib} MiB "
                f"to {largest.size_mib} MiB",
                mib(largest.peak - smallest.peak),
                "PASS" if flat else "FAIL",
            ),
            ("every task stored whole", str(all_stored), "PASS" if all_stored else "FAIL"),
        ],
    )
    write_json(
        args.json,
        "worker_rss",
        [
            Result(
                f"worker peak RSS, {run.size_mib} MiB source",
                mib(run.peak),
                f"{mib(run.idle)} idle",
                f"{run.peak / run.idle:.2f}",
                f"<= {args.limit_mib:.0f} MiB"
                + (
                    f", <= {args.spread_mib:.0f} MiB over {smallest.size_mib} MiB"
                    if run is largest and run is not smallest
                    else ""
                ),
                run.stored_right
                and run.peak <= args.limit_mib * MIB
                and (run is not largest or flat),
            )
            for run in runs
        ],
    )
    return 0 if under_limit and flat and all_stored else 1


if __name__ == "__main__":
    sys.exit(main())
