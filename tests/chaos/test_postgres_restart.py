"""Scenario 2: the database server restarts under load. Every service reconnects on its
own (readiness comes back, submits succeed again) and no task stays ``running`` past its
lease: each one ends without waiting for the stale-task reaper. Nothing is lost, charged
twice or stored twice, no valid session gets a 401, and no client misses a status
change."""

from __future__ import annotations

import asyncio
import secrets
import time

import httpx
import pytest

from tests.chaos.support import (
    LEASE_SECONDS,
    ChaosStack,
    Outcome,
    User,
    check_streams,
    false_401s,
    fetch,
    report,
    scale,
    scaled,
    sign_up,
    submit,
    tally,
    timed,
    watching,
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
    task_owner: dict[str, str],
) -> None:
    """Submit a task and read it back, over and over, until ``stop``."""
    while not stop.is_set():
        url = f"{source_url}?n={secrets.token_hex(4)}"
        response = await timed("gateway", submit(client, user, url), outcomes)
        if response is not None and response.status_code == 202:
            task_id = response.json()["task"]["id"]
            task_owner[task_id] = user.id
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
    task_owner: dict[str, str] = {}
    overdue: dict[str, float] = {}
    stop_load, stop_watching = asyncio.Event(), asyncio.Event()
    ready_after: list[float] = []
    submit_after: list[float] = []
    async with (
        watching(chaos.public_url, users) as watchers,
        httpx.AsyncClient(base_url=chaos.public_url, timeout=30) as client,
    ):
        load = [
            asyncio.create_task(_load(client, user, source_url, stop_load, outcomes, task_owner))
            for user in users
        ]
        lease_watcher = asyncio.create_task(
            _watch_leases(chaos.database_url, stop_watching, overdue)
        )
        try:
            for _ in range(restarts):
                await asyncio.sleep(4)  # jobs in every stage when the server goes
                await asyncio.to_thread(chaos.postgres.stop)
                await asyncio.sleep(outage_seconds)
                await asyncio.to_thread(chaos.postgres.start)
                back = time.monotonic()  # pg_ctl -w returns once it accepts connections
                took = await chaos.wait_all_ready(within=60)
                ready_after.append(max(took.values()))
                accepted = await _first_submit_after(client, users[0], source_url, task_owner)
                submit_after.append(accepted - back)
            await asyncio.sleep(3)  # the load goes on a little on the recovered stack
        finally:
            stop_load.set()
            await asyncio.gather(*load)
        counts = await tally(
            chaos, [u.id for u in users], list(task_owner), within=90 + 60 * scale()
        )
        stop_watching.set()
        await lease_watcher
        stream_check = await check_streams(chaos.database_url, watchers, task_owner)

    by_status = counts.by_status
    worst_overdue = max(overdue.values(), default=0.0)
    false_401 = false_401s((o.status for o in outcomes), watchers)
    report(
        "postgres-restart",
        counts,
        false_401s=false_401,
        missed_events=stream_check.missed,
        restarts=restarts,
        outage_s=outage_seconds,
        succeeded=by_status["succeeded"],
        failed=by_status["failed"],
        worst_overdue_lease_s=round(worst_overdue, 1),
        ready_again_s=max(ready_after),
        submit_ok_again_s=round(max(submit_after), 2),
        requests=len(outcomes),
        refused_during_outage=sum(o.status not in (200, 202) for o in outcomes),
        refused_stream_connects=sum(w.refused.total() for w in watchers),
    )
    assert counts.lost == 0, counts.unfinished
    assert by_status["failed"] == 0, by_status
    assert counts.money.double_charged == 0
    assert counts.duplicates == 0
    assert false_401 == 0
    assert stream_check.missed == 0, stream_check
    assert stream_check.out_of_order == 0, stream_check
    assert worst_overdue <= TAKEN_OVER_WITHIN_SECONDS, sorted(overdue.items(), key=lambda i: -i[1])[
        :5
    ]


async def _first_submit_after(
    client: httpx.AsyncClient, user: User, source_url: str, task_owner: dict[str, str]
) -> float:
    """Submit until one is accepted; when it was."""
    deadline = time.monotonic() + 60
    while True:
        response = await submit(client, user, f"{source_url}?first={secrets.token_hex(4)}")
        if response.status_code == 202:
            task_owner[response.json()["task"]["id"]] = user.id
            return time.monotonic()
        assert time.monotonic() < deadline, f"submits still refused: {response.text}"
        await asyncio.sleep(0.2)
