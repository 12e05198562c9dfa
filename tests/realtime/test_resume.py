"""A client that loses its event stream during a job and comes back with ``Last-Event-ID``
misses nothing and sees nothing twice: through nginx to one notifier, and across two notifier
replicas when the one it was on is killed. Real processes, a real job."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from devstack import stack
from services.notifier.tests.support import Block, EventReader
from tests.realtime.support import SlowOrigin, sign_up

MIB = 1024 * 1024
TERMINAL = {"succeeded", "failed", "canceled"}
WAIT_SECONDS = 30.0


@contextlib.asynccontextmanager
async def events(
    client: httpx.AsyncClient, base_url: str, task_id: str, last_event_id: int | None = None
) -> AsyncIterator[EventReader]:
    """``GET /v1/events?task=…`` on ``base_url`` with the client's session cookie."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    async with client.stream(
        "GET", f"{base_url}/v1/events", params={"task": task_id}, headers=headers
    ) as response:
        assert response.status_code == 200, await response.aread()
        yield EventReader(response)


async def read_until(reader: EventReader, seen: list[Block], done: Callable[[Block], bool]) -> None:
    while True:
        block = await reader.event(WAIT_SECONDS)
        seen.append(block)
        if done(block) or block.task["status"] in TERMINAL:
            return


async def stored_events(pool: asyncpg.Pool, task_id: str) -> list[tuple[int, str]]:
    """(event id, status) of every change recorded for the task, oldest first."""
    rows = await pool.fetch(
        """SELECT id, task->>'status' AS status FROM media.task_events
           WHERE task_id = $1 ORDER BY id""",
        task_id,
    )
    return [(row["id"], row["status"]) for row in rows]


async def wait_stored(
    pool: asyncpg.Pool, task_id: str, done: Callable[[list[tuple[int, str]]], bool]
) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        while not done(await stored_events(pool, task_id)):
            await asyncio.sleep(0.05)


def progressing(block: Block) -> bool:
    return block.task["status"] == "running" and (block.task["progress"] or 0) > 0


def assert_every_change_once_in_order(seen: list[Block], stored: list[tuple[int, str]]) -> None:
    """From the first event the client got (its snapshot) on, it saw exactly what was stored."""
    first = seen[0].id
    expected = [(event_id, status) for event_id, status in stored if event_id >= first]
    assert [(block.id, block.task["status"]) for block in seen] == expected
    assert expected[-1][1] == "succeeded"
    assert "running" in [status for _, status in expected]


async def submit(client: httpx.AsyncClient, url: str) -> str:
    response = await client.post("/v1/tasks", json={"url": url})
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task"]["id"]
    return task_id


async def test_reconnecting_with_last_event_id_sees_every_change_once_in_order(
    running_stack: stack.StackConfig, slow_origin: SlowOrigin, db_pool: asyncpg.Pool
) -> None:
    ingress = running_stack.public_url
    async with httpx.AsyncClient(base_url=ingress, timeout=WAIT_SECONDS) as client:
        await sign_up(client)
        url, _ = slow_origin.sample(3 * MIB)
        task_id = await submit(client, url)
        seen: list[Block] = []

        # Away while the job moves on, then back while it still runs: the replay of what
        # was missed joins the live events without a gap or a repeat.
        async with events(client, ingress, task_id) as reader:
            await read_until(reader, seen, progressing)
        left_at = seen[-1].id
        await wait_stored(db_pool, task_id, lambda s: sum(i > left_at for i, _ in s) >= 2)
        async with events(client, ingress, task_id, last_event_id=left_at) as reader:
            await read_until(reader, seen, lambda block: block.id > left_at and progressing(block))

        # Away again until the job has ended: the replay alone brings the end.
        left_at = seen[-1].id
        await wait_stored(db_pool, task_id, lambda s: s[-1][1] in TERMINAL)
        async with events(client, ingress, task_id, last_event_id=left_at) as reader:
            await read_until(reader, seen, lambda _: False)

    stored = await stored_events(db_pool, task_id)
    assert_every_change_once_in_order(seen, stored)
    missed = [event_id for event_id, _ in stored if event_id > seen[0].id]
    assert len(missed) >= 4, f"too few changes to show a resume: {stored}"


@pytest.fixture
def two_notifiers(
    running_stack: stack.StackConfig, tmp_path: Path
) -> Iterator[tuple[stack.StackConfig, stack.StackConfig]]:
    """Notifier replicas A and B beside the stack (same database, broker and auth), each on
    its own port and run directory."""
    replicas = [
        dataclasses.replace(
            running_stack,
            run_dir=tmp_path / name,
            ports={**running_stack.ports, "notifier": stack.free_port()},
        )
        for name in ("a", "b")
    ]
    processes = [stack.start_service(replica, "notifier") for replica in replicas]
    try:
        for replica, process in zip(replicas, processes, strict=True):
            stack.wait_healthy(replica, "notifier", process)
        yield replicas[0], replicas[1]
    finally:
        for replica in replicas:
            stack.down(replica.run_dir, include_seaweedfs=False)


async def test_a_client_of_a_killed_replica_resumes_on_another_without_a_gap(
    running_stack: stack.StackConfig,
    slow_origin: SlowOrigin,
    db_pool: asyncpg.Pool,
    two_notifiers: tuple[stack.StackConfig, stack.StackConfig],
) -> None:
    replica_a, replica_b = two_notifiers
    a_url, b_url = replica_a.service_url("notifier"), replica_b.service_url("notifier")
    async with httpx.AsyncClient(base_url=running_stack.public_url, timeout=WAIT_SECONDS) as client:
        await sign_up(client)
        url, _ = slow_origin.sample(3 * MIB)
        task_id = await submit(client, url)
        seen: list[Block] = []
        watched_on_b: list[Block] = []

        async with events(client, b_url, task_id) as watcher:
            async with events(client, a_url, task_id) as reader:
                await read_until(reader, seen, progressing)
                stack.kill_service(replica_a, "notifier")
                with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, EOFError)):
                    await reader.event(WAIT_SECONDS)
            # Changes happen while the client has no stream; B must replay them.
            left_at = seen[-1].id
            await wait_stored(db_pool, task_id, lambda s: sum(i > left_at for i, _ in s) >= 2)
            async with events(client, b_url, task_id, last_event_id=left_at) as reader:
                await read_until(reader, seen, lambda _: False)
            # B's other client, connected all along, got the same events live.
            await read_until(watcher, watched_on_b, lambda _: False)

    stored = await stored_events(db_pool, task_id)
    assert_every_change_once_in_order(seen, stored)
    assert_every_change_once_in_order(watched_on_b, stored)
