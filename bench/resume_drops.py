"""Storing a source that breaks off, against the same source that does not, in one run.

    uv run python bench/resume_drops.py [--size-mib 1024] [--drops 3] [--rounds 3] [--ratio 1.15]

The origin (``bench/drop_origin.py``, a process of its own) honours ``Range``/``If-Range``
and, for the dropping URL, closes the connection at ``--drops`` evenly spaced offsets. Each
round stores the file once without drops and once with them, through a real
``mediaflow-worker``; the time is the task's processing time (its first ``running`` event
to ``succeeded``). The bench passes when the median round's ratio (with drops / without)
is at most ``--ratio`` and every task stored the right bytes in one attempt.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
from results import Result, write_json
from support import (
    bench_world,
    print_table,
    serving_process,
    submit_and_wait,
    worker_process,
    write_source,
)

from devstack import stack


@contextmanager
def drop_origin(directory: Path) -> Iterator[str]:
    port = stack.free_port()
    script = Path(__file__).with_name("drop_origin.py")
    with serving_process([sys.executable, str(script), str(directory), str(port)], port) as url:
        yield url


async def attempts(database_url: str, sha256: str | None) -> int:
    """The attempt the task with that result ended on (1: resumed within its attempt)."""
    con = await asyncpg.connect(database_url)
    try:
        value = await con.fetchval(
            "SELECT max(attempt) FROM media.tasks WHERE result_sha256 = $1", sha256
        )
        return int(value or 0)
    finally:
        await con.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--drops", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ratio", type=float, default=1.15)
    parser.add_argument("--json", help="also write the results here (for bench/all.py)")
    args = parser.parse_args()
    within = max(300.0, args.size_mib / 2)
    rounds: list[tuple[float, float, float]] = []  # without, with drops, ratio
    all_stored = True
    with bench_world("resume") as world:
        expected = write_source(world, "source.mp4", args.size_mib)
        # The cache off: each round downloads again.
        with (
            drop_origin(world.origin_dir) as origin,
            worker_process(
                world, {"CACHE_ENABLED": "false", "MAX_MEDIA_BYTES": str((args.size_mib + 1) << 20)}
            ),
        ):
            for number in range(args.rounds):
                plain = asyncio.run(
                    submit_and_wait(world, f"{origin}/source.mp4?run=p{number}", within)
                )
                dropped = asyncio.run(
                    submit_and_wait(
                        world, f"{origin}/source.mp4?run=d{number}&drops={args.drops}", within
                    )
                )
                for outcome in (plain, dropped):
                    all_stored &= outcome.status == "succeeded" and outcome.sha256 == expected
                all_stored &= asyncio.run(attempts(world.config.database_url, expected)) == 1
                without = plain.processing_seconds or plain.seconds
                with_drops = dropped.processing_seconds or dropped.seconds
                rounds.append((without, with_drops, with_drops / without))
    ratio = statistics.median(r for _, _, r in rounds)
    passed = all_stored and ratio <= args.ratio
    print_table(
        f"Storing {args.size_mib} MiB with {args.drops} drops against none, same run",
        ("round", "without drops", f"with {args.drops} drops", "ratio"),
        [
            (str(n + 1), f"{a:.1f} s", f"{b:.1f} s", f"{r:.2f}")
            for n, (a, b, r) in enumerate(rounds)
        ],
    )
    print_table(
        "Checks",
        ("check", "measured", "result"),
        [
            (
                f"with drops <= {args.ratio} x without (median of {args.rounds})",
                f"{ratio:.2f} x",
                "PASS" if ratio <= args.ratio else "FAIL",
            ),
            (
                "every task stored whole, in one attempt",
                str(all_stored),
                "PASS" if all_stored else "FAIL",
            ),
        ],
    )
    write_json(
        args.json,
        "resume_drops",
        [
            Result(
                f"storing {args.size_mib} MiB with {args.drops} drops / without",
                f"{ratio:.2f} x",
                f"{statistics.median(a for a, _, _ in rounds):.1f} s without drops",
                f"{ratio:.2f}",
                f"<= {args.ratio:.2f}, every task stored whole in one attempt",
                passed,
            )
        ],
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
