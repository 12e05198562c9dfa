"""Worker throughput against the pipe's limit, all measured in the same run.

    uv run python bench/worker_throughput.py [--size-mib 512] [--rounds 5] [--ratio 0.9]

The pipe's limit is the slower of its two ends, each measured alone on the same machine:
reading the source to nowhere (aiohttp, 256 KiB chunks, from the same origin process), and
a plain multipart upload of in-memory bytes to the same S3 (the services' own client,
``mediaflow_libs.s3``, with the worker's part size and parts in flight, each part with its
checksum like the worker's). The worker's throughput is the
source's size over the task's processing time (its first ``running`` event to
``succeeded``). Other work on the machine moves both a lot, so the bench runs rounds, each a
plain upload next to a worker task (the plain upload first in odd rounds, second in even
ones, so that a load rising or falling through a round favours neither), and passes when the
median of the rounds' ratios (worker over that round's limit) is at least ``--ratio`` and
every task stored the right bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import time
from typing import Any

import aiohttp
from results import Result, write_json
from support import (
    bench_world,
    origin_process,
    print_table,
    submit_and_wait,
    worker_process,
    write_source,
)

from mediaflow_libs.s3 import completed_part, ensure_bucket, open_s3
from mediaflow_libs.settings import MIB, S3Settings
from mediaflow_worker.settings import WorkerSettings

READ_CHUNK = 256 * 1024


async def read_to_nowhere(url: str) -> float:
    """MiB/s reading ``url`` and dropping the bytes."""
    started = time.perf_counter()
    size = 0
    async with aiohttp.ClientSession(read_bufsize=READ_CHUNK) as session, session.get(url) as got:
        async for chunk in got.content.iter_chunked(READ_CHUNK):
            size += len(chunk)
    return size / MIB / (time.perf_counter() - started)


async def plain_upload(settings: S3Settings, size: int, part: int, in_flight: int) -> float:
    """MiB/s of one multipart upload of ``size`` in-memory bytes (one random part, sent
    again and again), ``in_flight`` parts at a time."""
    data = os.urandom(part)
    bucket, key = settings.s3_bucket, "bench/plain-upload"
    async with open_s3(settings) as s3:
        await ensure_bucket(s3, bucket)
        started = time.perf_counter()
        upload = await s3.create_multipart_upload(Bucket=bucket, Key=key)
        slots = asyncio.Semaphore(in_flight)
        done: dict[int, dict[str, Any]] = {}

        async def send(number: int) -> None:
            async with slots:
                sent = await s3.upload_part(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload["UploadId"],
                    PartNumber=number,
                    Body=io.BytesIO(data),
                )
                done[number] = completed_part(number, sent)

        await asyncio.gather(*(send(n) for n in range(1, -(-size // part) + 1)))
        await s3.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [done[n] for n in sorted(done)]},
        )
        seconds = time.perf_counter() - started
        await s3.delete_object(Bucket=bucket, Key=key)
    return size / MIB / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ratio", type=float, default=0.9)
    parser.add_argument("--json", help="also write the results here (for bench/all.py)")
    args = parser.parse_args()
    # The worker's own defaults (or what the environment sets for it).
    defaults = WorkerSettings.model_fields
    part = int(os.environ.get("UPLOAD_PART_BYTES", defaults["upload_part_bytes"].default))
    in_flight = int(
        os.environ.get("UPLOAD_PARTS_IN_FLIGHT", defaults["upload_parts_in_flight"].default)
    )
    size = args.size_mib * MIB
    rounds: list[tuple[float, float, float]] = []  # plain upload, worker, ratio
    all_stored = True
    with bench_world("throughput") as world:
        expected = write_source(world, "source.mp4", args.size_mib)
        with origin_process(world.origin_dir) as origin, worker_process(world):
            read = asyncio.run(read_to_nowhere(f"{origin}/source.mp4"))
            for number in range(args.rounds):
                if number % 2 == 0:
                    upload = asyncio.run(plain_upload(world.s3_settings, size, part, in_flight))
                # A URL of its own per round: the same one would be a cache hit, not a download.
                url = f"{origin}/source.mp4?round={number}"
                outcome = asyncio.run(submit_and_wait(world, url, within=max(120.0, size / MIB)))
                if number % 2 == 1:
                    upload = asyncio.run(plain_upload(world.s3_settings, size, part, in_flight))
                all_stored &= outcome.status == "succeeded" and outcome.sha256 == expected
                worker = args.size_mib / (outcome.processing_seconds or outcome.seconds)
                rounds.append((upload, worker, worker / min(read, upload)))
            # For comparison only: the store with bigger parts and more of them at once.
            upload_wide = asyncio.run(plain_upload(world.s3_settings, size, 8 * MIB, 4))

    ratio = statistics.median(r for _, _, r in rounds)
    passed = all_stored and ratio >= args.ratio
    print_table(
        f"Throughput, {args.size_mib} MiB source, parts of {part / MIB:.0f} MiB x {in_flight}; "
        "the plain upload runs right before the worker in odd rounds, right after it in even ones",
        ("round", "read to nowhere", "plain upload", "pipe limit", "worker", "worker / limit"),
        [
            (
                str(number + 1),
                f"{read:.0f} MiB/s",
                f"{upload:.0f} MiB/s",
                f"{min(read, upload):.0f} MiB/s",
                f"{worker:.0f} MiB/s",
                f"{ratio_:.2f}",
            )
            for number, (upload, worker, ratio_) in enumerate(rounds)
        ],
    )
    print(f"\n(for comparison: a plain upload in parts of 8 MiB x 4: {upload_wide:.0f} MiB/s)")
    print_table(
        "Checks",
        ("check", "measured", "result"),
        [
            (
                f"worker >= {args.ratio} x pipe limit (median of {args.rounds} rounds)",
                f"{ratio:.2f} x (rounds {min(r for _, _, r in rounds):.2f}"
                f"-{max(r for _, _, r in rounds):.2f})",
                "PASS" if ratio >= args.ratio else "FAIL",
            ),
            ("every task stored whole", str(all_stored), "PASS" if all_stored else "FAIL"),
        ],
    )
    median_round = min(rounds, key=lambda r: abs(r[2] - ratio))
    write_json(
        args.json,
        "worker_throughput",
        [
            Result(
                f"worker streaming throughput, {args.size_mib} MiB (median of {args.rounds})",
                f"{median_round[1]:.0f} MiB/s",
                f"{min(read, median_round[0]):.0f} MiB/s pipe limit",
                f"{ratio:.2f}",
                f">= {args.ratio:.2f}, every task stored whole",
                passed,
            )
        ],
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
