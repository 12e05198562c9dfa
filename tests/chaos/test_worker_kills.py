"""Scenario 1: hundreds of tasks while a worker is SIGKILLed every 10 s (and restarted)
and the broker is restarted once. Every task ends; none is lost, charged twice or stored
twice; the credits add up; no client misses a status change."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import secrets
import time

import httpx
import pytest

from tests.chaos.support import (
    LEASE_SECONDS,
    ChaosStack,
    check_streams,
    false_401s,
    report,
    scale,
    scaled,
    sign_up,
    submit,
    tally,
    watching,
)
from tests.realtime.support import SlowOrigin

KILL_EVERY_SECONDS = 10.0
BATCH = 10
SUBMIT_SECONDS_PER_TASK = 40 / 300  # 300 tasks over 40 s: a few kills and the broker restart
SOURCE_BYTES = 192 * 1024  # about 0.2 s at the origin's pace: kills land mid-transfer


async def _kill_workers_until(chaos: ChaosStack, done: asyncio.Event, log: list[str]) -> None:
    """SIGKILL a worker every 10 s (the two in turn) and start it again; restart the broker
    once, after the first kill."""
    workers = itertools.cycle([chaos.config, chaos.worker_b])
    broker_restarted = False
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
        if not broker_restarted:
            broker_restarted = True
            await asyncio.to_thread(chaos.rabbitmq.restart)
            log.append("broker-restart")


@pytest.mark.timeout(240 + 300 * scale())
async def test_tasks_survive_killed_workers_and_a_broker_restart(
    healthy_stack: ChaosStack, chaos_origin: SlowOrigin
) -> None:
    chaos = healthy_stack
    total = scaled(300)
    users = await sign_up(chaos.public_url, 10)
    source_url, _ = chaos_origin.sample(SOURCE_BYTES)
    task_owner: dict[str, str] = {}
    refused: collections.Counter[int] = collections.Counter()
    done = asyncio.Event()
    chaos_log: list[str] = []
    async with watching(chaos.public_url, users) as watchers:
        started = time.monotonic()
        killer = asyncio.create_task(_kill_workers_until(chaos, done, chaos_log))
        try:
            async with httpx.AsyncClient(base_url=chaos.public_url, timeout=30) as client:
                limit = asyncio.Semaphore(8)

                async def one(n: int) -> None:
                    user = users[n % len(users)]
                    # A URL of its own per task: no task completes from another's stored copy.
                    url = f"{source_url}?n={n}-{secrets.token_hex(3)}"
                    async with limit:
                        for _ in range(20):
                            response = await submit(client, user, url)
                            if response.status_code == 202:
                                task_owner[response.json()["task"]["id"]] = user.id
                                return
                            refused[response.status_code] += 1
                            await asyncio.sleep(0.5)

                # Submitted over a while, so that the kills (and the broker restart) meet jobs
                # at every stage however fast the machine works through them.
                for first in range(0, total, BATCH):
                    await asyncio.gather(*(one(n) for n in range(first, min(first + BATCH, total))))
                    due = started + (first + BATCH) * SUBMIT_SECONDS_PER_TASK
                    await asyncio.sleep(max(due - time.monotonic(), 0))
            counts = await tally(
                chaos, [u.id for u in users], list(task_owner), within=120 + 120 * scale()
            )
            elapsed = time.monotonic() - started
        finally:
            done.set()
            await killer
        stream_check = await check_streams(chaos.database_url, watchers, task_owner)

    by_status = counts.by_status
    money = counts.money
    expected_balance = money.granted - money.cost * (len(task_owner) - money.refunded)
    kills = sum(entry.startswith("kill") for entry in chaos_log)
    false_401 = false_401s(refused.elements(), watchers)
    report(
        "worker-kills",
        counts,
        false_401s=false_401,
        missed_events=stream_check.missed,
        succeeded=by_status["succeeded"],
        failed=by_status["failed"],
        uncharged=money.uncharged,
        double_refunded=money.double_refunded,
        missing_objects=counts.missing_objects,
        orphan_objects=counts.orphan_objects,
        balance=money.balance,
        expected_balance=expected_balance,
        worker_kills=kills,
        broker_restarts=chaos_log.count("broker-restart"),
        submit_retries=sum(refused.values()),
        stream_connects=sum(w.connects for w in watchers),
        lease_seconds=LEASE_SECONDS,
        seconds=round(elapsed, 1),
    )
    assert len(task_owner) == total, f"submits refused for good: {refused}"
    assert kills >= 2, chaos_log
    assert "broker-restart" in chaos_log, chaos_log
    assert counts.lost == 0, counts.unfinished
    # The origin is healthy: a failed task is a defect (which its refund would hide).
    assert by_status["failed"] == 0, by_status
    assert money.double_charged == 0
    assert money.uncharged == 0
    assert money.double_refunded == 0
    assert money.refunds_of_succeeded == 0
    assert money.refunded == by_status["failed"] + by_status["canceled"]
    assert money.balance == expected_balance
    assert counts.duplicates == 0
    assert counts.missing_objects == 0
    assert counts.orphan_objects == 0
    assert false_401 == 0, refused
    assert stream_check.missed == 0, stream_check
    assert stream_check.out_of_order == 0, stream_check
