"""Scenario 3: auth stops under load. Gateway and notifier never answer 401 for it (503
``auth_unavailable`` is the honest answer) and recover within 5 s of auth answering again.
The tasks submitted meanwhile all end, charged once and stored once, and a client watching
its events misses none of them."""

from __future__ import annotations

import asyncio
import collections
import secrets
import time

import httpx
import pytest

from tests.chaos.support import (
    ChaosStack,
    Outcome,
    User,
    check_streams,
    false_401s,
    problem_code,
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

RECOVERY_SECONDS = 5.0
# Longer than the services' session cache (AUTH_CACHE_SECONDS, 5 s), so that every
# session really has to be checked with auth while it is away.
OUTAGE_SECONDS = 8.0


async def _gateway_load(
    client: httpx.AsyncClient,
    user: User,
    url: str,
    stop: asyncio.Event,
    into: list[Outcome],
    task_owner: dict[str, str],
) -> None:
    while not stop.is_set():
        await timed("gateway", client.get("/v1/me", headers=user.headers), into)
        response = await timed(
            "gateway", submit(client, user, f"{url}?n={secrets.token_hex(4)}"), into
        )
        if response is not None and response.status_code == 202:
            task_id = response.json()["task"]["id"]
            task_owner[task_id] = user.id
            await timed("gateway", client.get(f"/v1/tasks/{task_id}", headers=user.headers), into)
        await asyncio.sleep(0.25)


async def _notifier_load(
    client: httpx.AsyncClient, user: User, stop: asyncio.Event, into: list[Outcome]
) -> None:
    """Open an event stream, read its first line, hang up; again and again."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            async with client.stream("GET", "/v1/events", headers=user.headers) as response:
                if response.status_code == 200:
                    async for _ in response.aiter_lines():
                        break
                else:
                    await response.aread()
                status, code = response.status_code, problem_code(response)
                into.append(Outcome("notifier", started, time.monotonic(), status, code))
        except httpx.HTTPError:
            into.append(Outcome("notifier", started, time.monotonic(), 0, None))
        await asyncio.sleep(0.25)


@pytest.mark.timeout(120 + 180 * scale())
async def test_an_auth_outage_is_never_a_401_and_passes_within_5_s(
    healthy_stack: ChaosStack, chaos_origin: SlowOrigin
) -> None:
    chaos = healthy_stack
    outages = scaled(1)
    outage_seconds = OUTAGE_SECONDS * scale()
    users = await sign_up(chaos.public_url, 4)
    source_url, _ = chaos_origin.sample(4096)
    outcomes: list[Outcome] = []
    task_owner: dict[str, str] = {}
    returned_at: list[float] = []
    stopped_at: list[float] = []
    stop = asyncio.Event()
    async with (
        watching(chaos.public_url, users) as watchers,
        httpx.AsyncClient(base_url=chaos.public_url, timeout=30) as client,
    ):
        load = [
            asyncio.create_task(_gateway_load(client, u, source_url, stop, outcomes, task_owner))
            for u in users
        ]
        load += [asyncio.create_task(_notifier_load(client, u, stop, outcomes)) for u in users]
        try:
            for n in range(outages):
                await asyncio.sleep(3)
                # Stopped for good in turn: SIGTERM, then SIGKILL (no goodbye at all).
                stopped_at.append(time.monotonic())
                if n % 2 == 0:
                    await chaos.terminate(chaos.config, "auth")
                else:
                    await chaos.kill(chaos.config, "auth")
                await asyncio.sleep(outage_seconds)
                # Back is when it answers: start returns once auth's /readyz says 200.
                await chaos.start(chaos.config, "auth")
                returned_at.append(time.monotonic())
                await asyncio.sleep(RECOVERY_SECONDS + 3)
        finally:
            stop.set()
            await asyncio.gather(*load)
        counts = await tally(chaos, [u.id for u in users], list(task_owner), within=60)
        stream_check = await check_streams(chaos.database_url, watchers, task_owner)

    false_401 = false_401s((o.status for o in outcomes), watchers)
    unavailable = [o for o in outcomes if o.status == 503 and o.code == "auth_unavailable"]
    unexpected = [o for o in outcomes if o.status not in (200, 202, 401) and o not in unavailable]
    failures = [o for o in outcomes if o.status not in (200, 202)]
    # Recovery: the last request that still failed began this long after auth was back
    # (each outage on its own: up to the next one's start).
    recovery = 0.0
    for back, next_stop in zip(returned_at, [*stopped_at[1:], float("inf")], strict=True):
        late = [o.started - back for o in failures if back <= o.started < next_stop]
        recovery = max(recovery, *late, 0.0)
    succeeded_after = {
        service: sum(
            o.status in (200, 202) and o.started > returned_at[-1] + RECOVERY_SECONDS
            for o in outcomes
            if o.service == service
        )
        for service in ("gateway", "notifier")
    }
    by_service = collections.Counter((o.service, o.status) for o in outcomes)
    report(
        "auth-outage",
        counts,
        false_401s=false_401,
        missed_events=stream_check.missed,
        outages=outages,
        outage_s=outage_seconds,
        requests=len(outcomes),
        auth_unavailable_503s=len(unavailable),
        unexpected=len(unexpected),
        recovery_s=round(recovery, 2),
        gateway_ok_after=succeeded_after["gateway"],
        notifier_ok_after=succeeded_after["notifier"],
        refused_stream_connects=sum(w.refused.total() for w in watchers),
    )
    assert false_401 == 0, [o for o in outcomes if o.status == 401][:5]
    assert unexpected == [], (unexpected[:5], by_service)
    assert unavailable, "auth's outage was never noticed: the test proved nothing"
    assert recovery <= RECOVERY_SECONDS
    assert min(succeeded_after.values()) > 0, by_service
    assert counts.lost == 0, counts.unfinished
    assert counts.money.double_charged == 0
    assert counts.duplicates == 0
    assert stream_check.missed == 0, stream_check
    assert stream_check.out_of_order == 0, stream_check
