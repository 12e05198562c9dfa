"""Jobs survive a broker outage and a gateway killed between commit and publish
(run through the whole stack; RabbitMQ is stopped and started for real)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import asyncpg
import httpx

from devstack import media, stack

TERMINAL = ("succeeded", "failed", "canceled")


async def _users(client: httpx.AsyncClient, count: int) -> list[dict[str, str]]:
    users = []
    for _ in range(count):
        response = await client.post(
            "/v1/auth/sign-up",
            json={
                "email": f"fault-{secrets.token_hex(5)}@example.com",
                "password": "a long passphrase",
            },
        )
        assert response.status_code == 201
        users.append({"cookie": f"mf_session={response.cookies['mf_session']}"})
        client.cookies.clear()
    return users


async def _wait_terminal(pool: asyncpg.Pool, task_ids: list[str], within: float) -> dict[str, str]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        rows = await pool.fetch(
            "SELECT id::text, status FROM media.tasks WHERE id = ANY($1::uuid[])", task_ids
        )
        statuses = {row["id"]: row["status"] for row in rows}
        if (
            all(status in TERMINAL for status in statuses.values())
            or asyncio.get_running_loop().time() > deadline
        ):
            return statuses
        await asyncio.sleep(0.5)


async def _assert_charged_once(pool: asyncpg.Pool, task_ids: list[str]) -> None:
    charges = await pool.fetch(
        """SELECT task_id::text, count(*) AS n FROM media.credit_ledger
           WHERE task_id = ANY($1::uuid[]) AND reason = 'charge' GROUP BY task_id""",
        task_ids,
    )
    assert {row["task_id"]: row["n"] for row in charges} == dict.fromkeys(task_ids, 1)


async def test_submits_during_a_broker_outage_are_delivered_when_it_returns(
    running_stack: stack.StackConfig, origin: tuple[str, Path], db_pool: asyncpg.Pool
) -> None:
    base_url, directory = origin
    media.write_sample_mp4(directory / "tiny.mp4", 4096)
    async with httpx.AsyncClient(base_url=running_stack.public_url, timeout=30) as client:
        users = await _users(client, 10)
        stack.stop_rabbitmq_app()
        try:
            task_ids = []
            for user in users:
                for _ in range(10):
                    response = await client.post(
                        "/v1/tasks", json={"url": f"{base_url}/tiny.mp4"}, headers=user
                    )
                    assert response.status_code == 202, response.text
                    task_ids.append(response.json()["task"]["id"])
        finally:
            stack.start_rabbitmq_app()
    statuses = await _wait_terminal(db_pool, task_ids, within=120)
    print(
        f"broker outage: tasks={len(task_ids)} "
        f"succeeded={list(statuses.values()).count('succeeded')}"
    )
    assert list(statuses.values()).count("succeeded") == 100, statuses
    await _assert_charged_once(db_pool, task_ids)


async def test_a_gateway_killed_after_commit_loses_no_job(
    running_stack: stack.StackConfig, origin: tuple[str, Path], db_pool: asyncpg.Pool
) -> None:
    base_url, directory = origin
    media.write_sample_mp4(directory / "tiny.mp4", 4096)
    async with httpx.AsyncClient(base_url=running_stack.public_url, timeout=30) as client:
        [user] = await _users(client, 1)
        # With the broker down the committed jobs cannot leave the outbox; then the
        # gateway dies without any chance to publish them.
        stack.stop_rabbitmq_app()
        try:
            task_ids = []
            for _ in range(5):
                response = await client.post(
                    "/v1/tasks", json={"url": f"{base_url}/tiny.mp4"}, headers=user
                )
                assert response.status_code == 202
                task_ids.append(response.json()["task"]["id"])
            stack.kill_service(running_stack, "gateway")
        finally:
            stack.start_rabbitmq_app()
    waiting = await db_pool.fetchval(
        "SELECT count(*) FROM media.outbox WHERE exchange LIKE '%.jobs'"
    )
    assert waiting >= 5
    stack.restart_service(running_stack, "gateway")
    statuses = await _wait_terminal(db_pool, task_ids, within=60)
    assert set(statuses.values()) == {"succeeded"}, statuses
    await _assert_charged_once(db_pool, task_ids)
