"""Scenario 2: the database server restarts under load. Every service reconnects on its
own (readiness comes back, submits succeed again) and no task stays ``running`` past its
lease: each one ends without waiting for the stale-task reaper."""

from __future__ import annotations

import asyncio
import collections
import secrets
import time

import httpx
import pytest

from tests.chaos.support import (
    LEASE_SECONDS,
    ChaosStack,
    Outcome,
    User,
    fetch,
    report,
    scale,
    scaled,
    sign_up,
    submit,
    timed,
    wait_terminal,
)
from tests.realtime.support import SlowOrigin

SOURCE_BYTES = 512 * 1024  # about half a second per job: restarts land mid-transfer
# A task whose lease ran out is claimed again by its job's next delivery, which a
# postponed job waits for in a delay queue of up to 10 s (the one at or above the lease).
TAKEN_OVER_WITHIN_SECONDS = LEASE_SECONDS + 10 + 10


async def _load(
    client: httpx.AsyncClient,
    user: User,
    source_url: str,
    stop: asyncio.Event,
    outcomes: list[Outcome],
    task_ids: list[str],
) -> None:
    """Submit a task and read it back, over and over, until ``stop``."""
    while not stop.is_set():
        url = f"{source_url}?n={secrets.token_hex(4)}"
        response = await timed("gateway", submit(client, user, url), outcomes)
        if response is not None and response.status_code == 202:
            task_id = response.json()["task"]["id"]
            task_ids.append(task_id)
            await timed(
                "gateway", client.get(f"/v1/tasks/{task_id}", headers=user.headers), outcomes
            )
        await asyncio.sleep(0.3)


async def _watch_leases(url: str, stop: asyncio.Event, overdue: dict[str, float]) -> None:
    """How long past its lease each ``running`` task was seen (the worst sighting)."""
    while not stop.is_set():
        try:
            rows = await fetch(
                url,
                """SELECT id::text, extract(epoch FROM now() - lease_expires_at)::float8 AS past
                   FROM media.tasks WHERE status = 'running' AND lease_expires_at < now()""",
                within=0,
            )
        except Exception:  # the server is away: nothing to see
            rows = []
        for row in rows:
            overdue[row["id"]] = max(overdue.get(row["id"], 0.0), row["past"])
        await asyncio.sleep(0.5)


@pytest.mark.timeout(180 + 240 * scale())
async def test_services_reconnect_after_a_database_restart(
    healthy_stack: ChaosStack, chaos_origin: SlowOrigin
) -> None:
    chaos = healthy_stack
    restarts = scaled(1)
    outage_seconds = 3.0 * scale()
    users = await sign_up(chaos.public_url, 4)
    source_url, _ = chaos_origin.sample(SOURCE_BYTES)
    outcomes: list[Outcome] = []
    task_ids: list[str] = []
    overdue: dict[str, float] = {}
    stop_load, stop_watching = asyncio.Event(), asyncio.Event()
    ready_after: list[float] = []
    submit_after: list[float] = []
    async with httpx.AsyncClient(base_url=chaos.public_url, timeout=30) as client:
        load = [
            asyncio.create_task(_load(client, user, source_url, stop_load, outcomes, task_ids))
            for user in users
        ]
        watcher = asyncio.create_task(_watch_leases(chaos.database_url, stop_watching, overdue))
        try:
            for _ in range(restarts):
                await asyncio.sleep(4)  # jobs in every stage when the server goes
                await asyncio.to_thread(chaos.postgres.stop)
                await asyncio.sleep(outage_seconds)
                await asyncio.to_thread(chaos.postgres.start)
                back = time.monotonic()  # pg_ctl -w returns once it accepts connections
                took = await chaos.wait_all_ready(within=60)
                ready_after.append(max(took.values()))
                accepted = await _first_submit_after(client, users[0], source_url, task_ids)
                submit_after.append(accepted - back)
            await asyncio.sleep(3)  # the load goes on a little on the recovered stack
        finally:
            stop_load.set()
            await asyncio.gather(*load)
        final = await wait_terminal(chaos.database_url, task_ids, within=90 + 60 * scale())
        stop_watching.set()
        await watcher

    by_status = collections.Counter(final.values())
    unfinished = [t for t in task_ids if final.get(t) not in ("succeeded", "failed", "canceled")]
    worst_overdue = max(overdue.values(), default=0.0)
    statuses = collections.Counter(o.status for o in outcomes)
    report(
        "postgres-restart",
        restarts=restarts,
        outage_s=outage_seconds,
        tasks=len(task_ids),
        succeeded=by_status["succeeded"],
        failed=by_status["failed"],
        stuck_running=len(unfinished),
        worst_overdue_lease_s=round(worst_overdue, 1),
        ready_again_s=max(ready_after),
        submit_ok_again_s=round(max(submit_after), 2),
        requests=len(outcomes),
        refused_during_outage=sum(n for s, n in statuses.items() if s not in (200, 202)),
    )
    assert unfinished == [], {t: final.get(t) for t in unfinished}
    assert by_status["failed"] == 0, by_status
    assert worst_overdue <= TAKEN_OVER_WITHIN_SECONDS, sorted(overdue.items(), key=lambda i: -i[1])[
        :5
    ]


async def _first_submit_after(
    client: httpx.AsyncClient, user: User, source_url: str, task_ids: list[str]
) -> float:
    """Submit until one is accepted; when it was."""
    deadline = time.monotonic() + 60
    while True:
        response = await submit(client, user, f"{source_url}?first={secrets.token_hex(4)}")
        if response.status_code == 202:
            task_ids.append(response.json()["task"]["id"])
            return time.monotonic()
        assert time.monotonic() < deadline, f"submits still refused: {response.text}"
        await asyncio.sleep(0.2)
