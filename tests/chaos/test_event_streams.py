"""Scenarios 4 and 5: event streams through a notifier restart and an nginx reload.
Clients stay connected while tasks run; whatever cuts their stream, they come back with
``Last-Event-ID`` (as a browser's ``EventSource`` does) and miss no status change."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import httpx
import pytest

from devstack import stack
from tests.chaos.support import (
    ChaosStack,
    StreamCheck,
    User,
    Watcher,
    check_streams,
    report,
    scale,
    scaled,
    sign_up,
    submit,
    until,
    wait_terminal,
)
from tests.realtime.support import SlowOrigin

SOURCE_BYTES = 1536 * 1024  # about 1.5 s per job, with progress events all along
CLIENTS = 6


async def _run_with_streams(
    chaos: ChaosStack,
    origin: SlowOrigin,
    disrupt: Callable[[list[Watcher]], Awaitable[None]],
    tasks_per_user: int,
) -> tuple[StreamCheck, list[Watcher], int]:
    """Connect a client per user, run tasks, ``disrupt`` while they run, wait until every
    task ended and every client saw it end; returns what the clients missed."""
    users = await sign_up(chaos.public_url, CLIENTS)
    watchers = [Watcher(chaos.public_url, user) for user in users]
    streams = [asyncio.create_task(w.run()) for w in watchers]
    task_ids: dict[str, list[str]] = {user.id: [] for user in users}
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(w.connected.wait() for w in watchers))
        async with httpx.AsyncClient(base_url=chaos.public_url, timeout=30) as client:

            async def tasks_of(user: User) -> None:
                for _ in range(tasks_per_user):
                    url, _ = origin.sample(SOURCE_BYTES)
                    response = await submit(client, user, url)
                    assert response.status_code == 202, response.text
                    task_ids[user.id].append(response.json()["task"]["id"])
                    await asyncio.sleep(0.7)

            submitting = asyncio.gather(*(tasks_of(user) for user in users))
            await asyncio.sleep(2)  # jobs are running, events flowing
            await disrupt(watchers)
            await submitting
        every_task = [t for ids in task_ids.values() for t in ids]
        await wait_terminal(chaos.database_url, every_task, within=60 + 60 * scale())

        async def all_seen() -> bool:
            check = await check_streams(chaos.database_url, watchers, task_ids)
            return check.unfinished == 0

        await until(all_seen, within=30)
    finally:
        for task in streams:
            task.cancel()
        for task in streams:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    check = await check_streams(chaos.database_url, watchers, task_ids)
    return check, watchers, sum(len(ids) for ids in task_ids.values())


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

    check, watchers, tasks = await _run_with_streams(
        chaos, chaos_origin, restart_notifier, tasks_per_user=scaled(4)
    )
    assert all(w.connects > 1 for w in watchers), "a client was never cut off: nothing was shown"
    _report_and_check("notifier-restart", check, watchers, tasks, restarts=restarts)


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

    check, watchers, tasks = await _run_with_streams(
        chaos, chaos_origin, reload_nginx, tasks_per_user=scaled(3)
    )
    assert sum(w.connects > 1 for w in watchers) >= len(watchers) // 2
    _report_and_check("nginx-reload", check, watchers, tasks, reloads=reloads)


def _report_and_check(
    scenario: str, check: StreamCheck, watchers: list[Watcher], tasks: int, **fault_counts: int
) -> None:
    """Print the scenario's counts, then hold it to them: every stored status change of
    every task reached every client, in order, and every task ended."""
    report(
        scenario,
        clients=len(watchers),
        tasks=tasks,
        **fault_counts,
        connects=sum(w.connects for w in watchers),
        refused_connects=sum(w.refused for w in watchers),
        status_changes=check.status_changes,
        missed_events=check.missed,
        out_of_order=check.out_of_order,
        unfinished=check.unfinished,
    )
    assert check.missed == 0
    assert check.out_of_order == 0
    assert check.unfinished == 0
