"""Scenario 1: hundreds of tasks while a worker is SIGKILLed every 10 s (and restarted)
and the broker is restarted once. Every task ends; none is lost, charged twice or stored
twice; the credits add up."""

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
    ledger,
    list_objects,
    report,
    scale,
    scaled,
    sign_up,
    submit,
    wait_terminal,
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
        task_ids = list(task_owner)
        final = await wait_terminal(chaos.database_url, task_ids, within=120 + 120 * scale())
    finally:
        done.set()
        await killer
    elapsed = time.monotonic() - started

    by_status = collections.Counter(final.values())
    lost = len(task_ids) - sum(by_status[s] for s in ("succeeded", "failed", "canceled"))
    money = await ledger(chaos.database_url, [u.id for u in users], task_ids)
    # Keys are tasks/<user>/<task>/<attempt>; this test's users have no other tasks.
    objects: collections.Counter[str] = collections.Counter()
    for user in users:
        for key in await list_objects(chaos.config.bucket, f"tasks/{user.id}/"):
            objects[key.split("/")[2]] += 1
    succeeded = [t for t, s in final.items() if s == "succeeded"]
    duplicate_objects = sum(max(objects[t] - 1, 0) for t in succeeded)
    missing_objects = sum(objects[t] == 0 for t in succeeded)
    orphan_objects = sum(n for t, n in objects.items() if final.get(t) != "succeeded")
    expected_balance = money.granted - money.cost * (len(task_ids) - money.refunded)
    kills = sum(entry.startswith("kill") for entry in chaos_log)
    report(
        "worker-kills",
        tasks=len(task_ids),
        succeeded=by_status["succeeded"],
        failed=by_status["failed"],
        lost=lost,
        double_charged=money.double_charged,
        uncharged=money.uncharged,
        double_refunded=money.double_refunded,
        duplicate_objects=duplicate_objects,
        missing_objects=missing_objects,
        orphan_objects=orphan_objects,
        balance=money.balance,
        expected_balance=expected_balance,
        worker_kills=kills,
        broker_restarts=chaos_log.count("broker-restart"),
        submit_retries=sum(refused.values()),
        lease_seconds=LEASE_SECONDS,
        seconds=round(elapsed, 1),
    )
    assert len(task_ids) == total, f"submits refused for good: {refused}"
    assert kills >= 2, chaos_log
    assert "broker-restart" in chaos_log, chaos_log
    assert lost == 0, {
        t: s for t, s in final.items() if s not in ("succeeded", "failed", "canceled")
    }
    assert money.double_charged == 0
    assert money.uncharged == 0
    assert money.double_refunded == 0
    assert money.refunds_of_succeeded == 0
    assert money.refunded == by_status["failed"] + by_status["canceled"]
    assert money.balance == expected_balance
    assert duplicate_objects == 0
    assert missing_objects == 0
    assert orphan_objects == 0
