"""Memory of a real worker process over its idle memory while it streams large sources.

    uv run python bench/worker_rss.py [--sizes-mib 200 2048] [--over-idle-mib 16] [--spread-mib 8]

For each size, a fresh ``mediaflow-worker`` (default settings) streams one generated MP4
from an origin on 127.0.0.1 to storage while its RSS is sampled every 20 ms; its idle RSS
before the job is the baseline. What streaming must prove is that memory does not grow with
size: passes when every task succeeded with the right SHA-256, every source's peak RSS minus
idle RSS stays at or under ``--over-idle-mib`` (the origin sends Content-Length, so parts
pass through from source to store), and that figure of the largest source is within
``--spread-mib`` of the smallest source's. Absolute RSS is reported, not a target (the chart
gives the worker 256 Mi). The database, queues, bucket and source files are removed at the
end; worker logs stay under ``.run/`` (ignored by git).

Where the idle memory goes: Python with asyncio and OpenSSL, pydantic, aiohttp (sources),
aiobotocore with botocore (its endpoint tables and S3 model), Litestar with uvicorn (the
shared operator routes), structlog, aio-pika, asyncpg, the OpenTelemetry SDK. During a job:
two parts of 8 MiB in flight, each passed through with two chunks of 256 KiB queued and sent
``aws-chunked`` with its checksum in a trailer (each chunk framed once on its way out), and
no part is buffered whole; the rest is the job's first-use heap.
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
    parser.add_argument("--over-idle-mib", type=float, default=16)
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
    bounded = all(run.peak - run.idle <= args.over_idle_mib * MIB for run in runs)
    growth = (largest.peak - largest.idle) - (smallest.peak - smallest.idle)
    flat = growth <= args.spread_mib * MIB
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
                f"peak - idle <= {args.over_idle_mib:.0f} MiB, every source",
                mib(max(run.peak - run.idle for run in runs)),
                "PASS" if bounded else "FAIL",
            ),
            (
                f"peak - idle grows <= {args.spread_mib:.0f} MiB from {smallest.size_mib} MiB "
                f"to {largest.size_mib} MiB",
                mib(growth),
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
                f"worker peak - idle RSS, {run.size_mib} MiB source",
                mib(run.peak - run.idle),
                f"{mib(run.idle)} idle, {mib(run.peak)} peak",
                f"{run.peak / run.idle:.2f}",
                f"<= {args.over_idle_mib:.0f} MiB"
                + (
                    f", <= {args.spread_mib:.0f} MiB over {smallest.size_mib} MiB"
                    if run is largest and run is not smallest
                    else ""
                ),
                run.stored_right
                and run.peak - run.idle <= args.over_idle_mib * MIB
                and (run is not largest or flat),
            )
            for run in runs
        ],
    )
    return 0 if bounded and flat and all_stored else 1


if __name__ == "__main__":
    sys.exit(main())
