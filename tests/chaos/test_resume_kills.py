"""Scenario: large files from a rate-limited origin that honours ranges, while a worker is
SIGKILLed every few seconds (and restarted). A task taken over from a dead worker goes on
at the last part its upload recorded: every task succeeds with its file's exact SHA-256,
is charged once, leaves no upload behind, and the origin serves little more than the
files' total size.

``make chaos`` (CHAOS_SCALE=3) runs the figures of the resume issue: 20 tasks of 256 MiB, a
kill every 10 s, 12 MiB/s per connection; ``make test`` (CHAOS_SCALE=1) 4 tasks of 64 MiB,
a kill every 3 s, 8 MiB/s.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack import media
from tests.chaos.servers import RangeOrigin
from tests.chaos.support import (
    ChaosStack,
    check_streams,
    false_401s,
    fetch,
    list_objects,
    object_sha256,
    open_uploads,
    report,
    scale,
    sign_up,
    submit,
    tally,
    watching,
)

MIB = 1024 * 1024
MAX_SERVED_OVER_TOTAL = 1.25


def _between(small: float, full: float) -> float:
    """``small`` at CHAOS_SCALE=1 (make test), ``full`` at 3 (make chaos), geometrically
    in between and beyond."""
    return small * (full / small) ** ((scale() - 1) / 2)


TASKS = round(_between(4, 20))
SOURCE_BYTES = round(_between(64, 256)) * MIB
KILL_EVERY_SECONDS = _between(3, 10)
# Each connection's pace: a job lasts long enough for several kills to land mid-transfer.
ORIGIN_BYTES_PER_SECOND = round(_between(8, 12) * MIB)


@pytest.fixture
def range_origin() -> Iterator[RangeOrigin]:
    with RangeOrigin(Path(tempfile.mkdtemp(prefix="mfchaos-range-")), ORIGIN_BYTES_PER_SECOND) as o:
        yield o


async def _kill_workers_until(chaos: ChaosStack, done: asyncio.Event, log: list[str]) -> None:
    """SIGKILL a worker every KILL_EVERY_SECONDS (the two in turn) and start it again."""
    workers = itertools.cycle([chaos.config, chaos.worker_b])
    while not done.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(KILL_EVERY_SECONDS):
                await done.wait()
        if done.is_set():
            return
        config = next(workers)
        await chaos.kill(config, "worker")
        log.append(f"kill:{config.run_dir.name}")
        await chaos.start(config, "worker")


@pytest.mark.timeout(240 + 400 * scale())
async def test_large_transfers_go_on_where_killed_workers_left_them(
    healthy_stack: ChaosStack, range_origin: RangeOrigin
) -> None:
    chaos = healthy_stack
    users = await sign_up(chaos.public_url, 2)
    expected: dict[str, str] = {}  # SHA-256 by file name
    for n in range(TASKS):
        name = f"big-{n}-{secrets.token_hex(4)}.mp4"
        expected[name] = await asyncio.to_thread(
            media.write_sample_mp4, range_origin.directory / name, SOURCE_BYTES
        )
    total = TASKS * SOURCE_BYTES
    task_owner: dict[str, str] = {}
    task_file: dict[str, str] = {}
    refused: collections.Counter[int] = collections.Counter()
    done = asyncio.Event()
    chaos_log: list[str] = []
    async with watching(chaos.public_url, users) as watchers:
        started = time.monotonic()
        killer = asyncio.create_task(_kill_workers_until(chaos, done, chaos_log))
        try:
            async with httpx.AsyncClient(base_url=chaos.public_url, timeout=30) as client:
                for n, name in enumerate(expected):
                    user = users[n % len(users)]
                    for _ in range(20):
                        response = await submit(client, user, range_origin.url(name))
                        if response.status_code == 202:
                            task_id = response.json()["task"]["id"]
                            task_owner[task_id], task_file[task_id] = user.id, name
                            break
                        refused[response.status_code] += 1
                        await asyncio.sleep(0.5)
            counts = await tally(
                chaos, [u.id for u in users], list(task_owner), within=120 + 300 * scale()
            )
            elapsed = time.monotonic() - started
        finally:
            done.set()
            await killer
        stream_check = await check_streams(chaos.database_url, watchers, task_owner)

    rows = await fetch(
        chaos.database_url,
        """SELECT id::text, status, attempt, result_sha256, error_code, error_message
           FROM media.tasks WHERE id = ANY($1::uuid[])""",
        list(task_owner),
    )
    failures = [
        (row["attempt"], row["error_code"], row["error_message"])
        for row in rows
        if row["status"] != "succeeded"
    ]
    recorded = {row["id"]: row["result_sha256"] for row in rows}
    wrong_sha256 = sum(recorded[t] != expected[task_file[t]] for t in counts.succeeded)
    # Keys are tasks/<user>/<task>/<attempt>: the object stored is the file, byte for byte.
    stored_wrong = 0
    for user in users:
        for key in await list_objects(chaos.config.bucket, f"tasks/{user.id}/"):
            task_id = key.split("/")[2]
            if await object_sha256(chaos.config.bucket, key) != expected[task_file[task_id]]:
                stored_wrong += 1
    uploads_left = sum(
        [len(await open_uploads(chaos.config.bucket, f"tasks/{u.id}/")) for u in users]
    )
    served_over_total = range_origin.served / total
    false_401 = false_401s(refused.elements(), watchers)
    kills = sum(entry.startswith("kill") for entry in chaos_log)
    report(
        "resume-kills",
        counts,
        false_401s=false_401,
        missed_events=stream_check.missed,
        succeeded=counts.by_status["succeeded"],
        source_mib=SOURCE_BYTES // MIB,
        wrong_sha256=wrong_sha256 + stored_wrong,
        orphan_uploads=uploads_left,
        served_over_total=round(served_over_total, 3),
        attempts_past_first=sum(row["attempt"] - 1 for row in rows),
        max_served_over_total=MAX_SERVED_OVER_TOTAL if scale() >= 3 else None,
        worker_kills=kills,
        kill_every_seconds=round(KILL_EVERY_SECONDS, 1),
        seconds=round(elapsed, 1),
    )
    assert len(task_owner) == TASKS, f"submits refused for good: {refused}"
    assert kills >= 2, chaos_log
    assert counts.lost == 0, counts.unfinished
    assert counts.by_status["succeeded"] == TASKS, (counts.by_status, failures)
    assert wrong_sha256 == 0 and stored_wrong == 0
    assert counts.money.double_charged == 0 and counts.money.uncharged == 0
    assert counts.duplicates == 0 and counts.missing_objects == 0
    assert uploads_left == 0
    # The bound holds at its figures; a few small files meet many kills each (a kill
    # costs what was fetched past the last recorded part, socket buffers included), so the
    # small run prints the ratio (1.21 measured) without holding it to that bound.
    if scale() >= 3:
        assert served_over_total <= MAX_SERVED_OVER_TOTAL
    assert false_401 == 0, refused
    assert stream_check.missed == 0, stream_check
    assert stream_check.out_of_order == 0, stream_check
