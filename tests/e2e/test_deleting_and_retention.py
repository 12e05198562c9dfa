"""Deleting tasks and expiring results, through the ingress of a whole stack with its worker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from devstack import stack
from mediaflow_worker.retention import sweep_stored_files
from tests.hostile.sources import Origin
from tests.hostile.support import World, assert_problem, open_storage, sign_up


@pytest.fixture(scope="module")
def hold_origin() -> Iterator[Origin]:
    # On 127.0.0.1, which the stack's egress rule allows (its sample origin lives there).
    origin = Origin("127.0.0.1")
    try:
        yield origin
    finally:
        origin.close()


@pytest.fixture(scope="module")
async def world(
    running_stack: stack.StackConfig, db_pool: asyncpg.Pool, infra: Any
) -> AsyncIterator[World]:
    async with open_storage(infra.secrets) as client:
        yield World(running_stack, db_pool, client)


def _job_outcome(config: stack.StackConfig, task_id: str) -> str | None:
    """The outcome the worker logged for the task's job, once it has."""
    log = config.run_dir / "logs" / "worker.log"
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("event") == "job.finished" and entry.get("task_id") == task_id:
            return str(entry["outcome"])
    return None


async def _wait_for(what: str, check: Any, within: float = 20) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (found := await check()) is None:
        assert loop.time() < deadline, f"{what}: not within {within} s"
        await asyncio.sleep(0.1)
    return found


async def test_deleting_a_running_task_cancels_refunds_and_stores_nothing(
    world: World, hold_origin: Origin
) -> None:
    user = await sign_up(world.url, "delete")
    async with world.client() as client:
        submitted = await client.post(
            "/v1/tasks", json={"url": f"{hold_origin.url}/hold/delete"}, headers=user.bearer
        )
        assert submitted.status_code == 202, submitted.text
        task_id = submitted.json()["task"]["id"]

        async def running() -> bool | None:
            task = (await client.get(f"/v1/tasks/{task_id}", headers=user.bearer)).json()["task"]
            return True if task["status"] == "running" else None

        await _wait_for("the task running", running)
        deleted = await client.delete(f"/v1/tasks/{task_id}", headers=user.bearer)
        assert deleted.status_code == 204, deleted.text
        # The source may now finish at once: the worker must not keep what it stores.
        hold_origin.release("delete")
        assert_problem(
            await client.get(f"/v1/tasks/{task_id}", headers=user.bearer), 404, "task_not_found"
        )
        listed = await client.get("/v1/tasks", headers=user.bearer)
        assert listed.json()["items"] == []
        me = await client.get("/v1/me", headers=user.bearer)
        assert me.json()["credits"]["balance"] == 10

    async def job_finished() -> str | None:
        return _job_outcome(world.config, task_id)

    outcome = await _wait_for("the worker's job ending", job_finished)
    assert outcome == "canceled"
    await world.assert_refunded_once(user, task_id)
    objects, uploads = await world.storage(user.id)
    assert (objects, uploads) == ((), ())


async def test_an_expired_result_is_swept_and_its_download_is_410(
    world: World, hold_origin: Origin, infra: Any
) -> None:
    user = await sign_up(world.url, "retention")
    async with world.client() as client:
        submitted = await client.post(
            "/v1/tasks", json={"url": f"{hold_origin.url}/media.mp4"}, headers=user.bearer
        )
        assert submitted.status_code == 202, submitted.text
        task_id = submitted.json()["task"]["id"]
        task = await world.wait_terminal(user, task_id)
        assert task["status"] == "succeeded", task
        # The stack runs with the default RESULT_RETENTION_DAYS, 30.
        expires = datetime.fromisoformat(task["result"]["expires_at"])
        assert abs(expires - datetime.fromisoformat(task["updated_at"]) - timedelta(days=30)) < (
            timedelta(minutes=1)
        )
        assert (
            await client.get(f"/v1/tasks/{task_id}/download", headers=user.bearer)
        ).status_code == 302
        objects, _ = await world.storage(user.id)
        assert len(objects) == 1

        # A sweep judged by a clock just short of the expiry keeps the file.
        await sweep_stored_files(
            world.pool, world.s3, infra.bucket, now=expires - timedelta(seconds=1)
        )
        assert (await world.storage(user.id))[0] == objects

        # The clock moved past it: the result is expired at once, its object gone with the
        # next sweep; two sweeps at the same time (two workers) share the work.
        async with world.pool.acquire() as con:
            await con.execute(
                """UPDATE media.tasks SET result_expires_at = now() - interval '1 second'
                   WHERE id = $1""",
                task_id,
            )
        expired = await client.get(f"/v1/tasks/{task_id}/download", headers=user.bearer)
        assert_problem(expired, 410, "result_expired")
        cleared = await asyncio.gather(
            sweep_stored_files(world.pool, world.s3, infra.bucket),
            sweep_stored_files(world.pool, world.s3, infra.bucket),
        )
        assert sum(cleared) >= 1
        assert await world.storage(user.id) == ((), ())
        assert_problem(
            await client.get(f"/v1/tasks/{task_id}/download", headers=user.bearer),
            410,
            "result_expired",
        )
        # The task itself stays, with its result's description.
        kept = (await client.get(f"/v1/tasks/{task_id}", headers=user.bearer)).json()["task"]
        assert kept["result"]["sha256"] == task["result"]["sha256"]
        # Deleting it afterwards is still a plain delete.
        assert (await client.delete(f"/v1/tasks/{task_id}", headers=user.bearer)).status_code == 204
