"""Scenarios 4 and 5: event streams through a notifier restart and an nginx reload.
Clients stay connected while tasks run; whatever cuts their stream, they come back with
``Last-Event-ID`` (as a browser's ``EventSource`` does) and miss no status change; the
tasks meanwhile end as usual (once charged, once stored)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from devstack import stack
from tests.chaos.support import (
    ChaosStack,
    StreamCheck,
    Tally,
    User,
    Watcher,
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

SOURCE_BYTES = 1536 * 1024  # about 1.5 s per job, with progress events all along
CLIENTS = 6


async def _run_with_streams(
    chaos: ChaosStack,
    origin: SlowOrigin,
    disrupt: Callable[[list[Watcher]], Awaitable[None]],
    tasks_per_user: int,
) -> tuple[Tally, StreamCheck, list[Watcher]]:
    """Connect a client per user, run tasks, ``disrupt`` while they run, wait until every
    task ended and every client saw it end; returns where the tasks ended up and what the
    clients missed."""
    users = await sign_up(chaos.public_url, CLIENTS)
    task_owner: dict[str, str] = {}
    async with watching(chaos.public_url, users) as watchers:
        async with httpx.AsyncClient(base_url=chaos.public_url, timeout=30) as client:

            async def tasks_of(user: User) -> None:
                for _ in range(tasks_per_user):
                    url, _ = origin.sample(SOURCE_BYTES)
                    response = await submit(client, user, url)
                    assert response.status_code == 202, response.text
                    task_owner[response.json()["task"]["id"]] = user.id
                    await asyncio.sleep(0.7)

            submitting = asyncio.gather(*(tasks_of(user) for user in users))
            await asyncio.sleep(2)  # jobs are running, events flowing
            await disrupt(watchers)
            await submitting
        counts = await tally(
            chaos, [u.id for u in users], list(task_owner), within=60 + 60 * scale()
        )
        check = await check_streams(chaos.database_url, watchers, task_owner)
    return counts, check, watchers


@pytest.mark.timeout(120 + 180 * scale())
async def test_clients_resume_across_a_notifier_restart_without_a_gap(
    healthy_stack: ChaosStack, chaos_origin: SlowOrigin
) -> None:
    chaos = healthy_stack
    restarts = scaled(1)

    async def restart_notifier(watchers: list[Watcher]) -> None:
        for n in range(restarts):
            if n:
                await asyncio.sleep(3)
            # A graceful restart (streams are ended on SIGTERM), then a crash, in turn.
            if n % 2 == 0:
                await chaos.terminate(chaos.config, "notifier")
            else:
                await chaos.kill(chaos.config, "notifier")
            await chaos.start(chaos.config, "notifier")

    counts, check, watchers = await _run_with_streams(
        chaos, chaos_origin, restart_notifier, tasks_per_user=scaled(4)
    )
    assert all(w.connects > 1 for w in watchers), "a client was never cut off: nothing was shown"
    _report_and_check("notifier-restart", counts, check, watchers, restarts=restarts)


@pytest.mark.timeout(120 + 180 * scale())
async def test_clients_resume_across_an_nginx_reload_without_a_gap(
    healthy_stack: ChaosStack, chaos_origin: SlowOrigin
) -> None:
    chaos = healthy_stack
    reloads = scaled(2)

    async def reload_nginx(watchers: list[Watcher]) -> None:
        for n in range(reloads):
            if n:
                await asyncio.sleep(2)
            await asyncio.to_thread(stack.reload_nginx, chaos.config)
            # Streams open before the reload stay with the old nginx worker until they end;
            # half the clients come back through the new one at once.
            for watcher in watchers[n % 2 :: 2]:
                watcher.drop()

    counts, check, watchers = await _run_with_streams(
        chaos, chaos_origin, reload_nginx, tasks_per_user=scaled(3)
    )
    assert sum(w.connects > 1 for w in watchers) >= len(watchers) // 2
    _report_and_check("nginx-reload", counts, check, watchers, reloads=reloads)


def _report_and_check(
    scenario: str,
    counts: Tally,
    check: StreamCheck,
    watchers: list[Watcher],
    **fault_counts: int,
) -> None:
    """Print the scenario's counts, then hold it to them: every stored status change of
    every task reached every client, in order; every task ended, charged and stored once;
    no client was turned away with a 401 (every session stays valid)."""
    false_401 = false_401s((), watchers)
    report(
        scenario,
        counts,
        false_401s=false_401,
        missed_events=check.missed,
        clients=len(watchers),
        **fault_counts,
        connects=sum(w.connects for w in watchers),
        refused_connects=sum(w.refused.total() for w in watchers),
        status_changes=check.status_changes,
        out_of_order=check.out_of_order,
        unfinished=check.unfinished,
    )
    assert check.missed == 0
    assert check.out_of_order == 0
    assert check.unfinished == 0
    assert counts.lost == 0, counts.unfinished
    assert counts.money.double_charged == 0
    assert counts.duplicates == 0
    assert false_401 == 0
