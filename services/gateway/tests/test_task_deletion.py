"""DELETE /v1/tasks/{id}: the task leaves every list its owner sees, its stored objects go,
an unfinished one is canceled (and refunded) first; nobody else's task can be touched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from mediaflow_gateway.settings import GatewaySettings
from mediaflow_libs import s3, tasks


def problem_code(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return str(response.json()["code"])


@pytest.fixture(scope="module")
async def storage(infra) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def]
    async with s3.open_s3(GatewaySettings(**infra.settings_kwargs())) as client:
        await s3.ensure_bucket(client, infra.bucket)
        yield client


async def _submit(gateway: httpx.AsyncClient, user: Any, **headers: str) -> str:
    created = await gateway.post(
        "/v1/tasks", json={"url": "https://media.example/d.mp4"}, headers=user.cookie | headers
    )
    assert created.status_code == 202, created.text
    return str(created.json()["task"]["id"])


async def _keys(storage: Any, bucket: str, prefix: str) -> list[str]:
    listing = await storage.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


async def test_deleting_a_stored_result_removes_its_object_and_the_task(
    gateway: httpx.AsyncClient, sign_up, db_pool, storage, infra
) -> None:  # type: ignore[no-untyped-def]
    user = await sign_up()
    task_id = await _submit(gateway, user)
    key = tasks.object_key(user.id, task_id, 1)
    await storage.put_object(Bucket=infra.bucket, Key=key, Body=b"media")
    async with db_pool.acquire() as con:
        await con.execute(
            """UPDATE media.tasks SET status = 'succeeded', object_key = $2, progress = 100,
                   result_size = 5, result_sha256 = 'x', result_content_type = 'video/mp4'
               WHERE id = $1""",
            task_id,
            key,
        )
    assert (
        await gateway.get(f"/v1/tasks/{task_id}/download", headers=user.cookie)
    ).status_code == 302

    deleted = await gateway.delete(f"/v1/tasks/{task_id}", headers=user.cookie)
    assert deleted.status_code == 204, deleted.text
    assert deleted.content == b""
    assert await _keys(storage, infra.bucket, tasks.object_prefix(user.id, task_id)) == []
    for path in (f"/v1/tasks/{task_id}", f"/v1/tasks/{task_id}/download"):
        gone = await gateway.get(path, headers=user.cookie)
        assert gone.status_code == 404
        assert problem_code(gone) == "task_not_found"
    listed = await gateway.get("/v1/tasks", headers=user.cookie)
    assert task_id not in [task["id"] for task in listed.json()["items"]]
    # A succeeded task keeps its charge: deleting the file is no refund.
    me = await gateway.get("/v1/me", headers=user.cookie)
    assert me.json()["credits"]["balance"] == 9

    again = await gateway.delete(f"/v1/tasks/{task_id}", headers=user.cookie)
    assert again.status_code == 404
    assert problem_code(again) == "task_not_found"


async def test_deleting_a_queued_task_cancels_and_refunds_it_once(
    gateway: httpx.AsyncClient, sign_up, db_pool
) -> None:  # type: ignore[no-untyped-def]
    user = await sign_up()
    task_id = await _submit(gateway, user)
    deleted = await gateway.delete(f"/v1/tasks/{task_id}", headers=user.cookie)
    assert deleted.status_code == 204, deleted.text
    me = await gateway.get("/v1/me", headers=user.cookie)
    assert me.json()["credits"]["balance"] == 10
    async with db_pool.acquire() as con:
        row = await con.fetchrow(
            """SELECT status, deleted_at IS NOT NULL AS deleted,
                      (SELECT count(*) FROM media.credit_ledger
                       WHERE task_id = $1 AND reason = 'refund') AS refunds,
                      (SELECT task->>'status' FROM media.task_events
                       WHERE task_id = $1 ORDER BY id DESC LIMIT 1) AS last_event
               FROM media.tasks WHERE id = $1""",
            task_id,
        )
    # Through the state machine: the cancel is an event like any other (SSE sees it).
    assert dict(row) == {
        "status": "canceled",
        "deleted": True,
        "refunds": 1,
        "last_event": "canceled",
    }
    canceled = await gateway.post(f"/v1/tasks/{task_id}/cancel", headers=user.cookie)
    assert canceled.status_code == 404


async def test_another_users_task_cannot_be_deleted(gateway: httpx.AsyncClient, sign_up) -> None:  # type: ignore[no-untyped-def]
    owner, other = await sign_up(), await sign_up()
    task_id = await _submit(gateway, owner)
    for spelling in (task_id, task_id.upper(), "not-a-uuid"):
        refused = await gateway.delete(f"/v1/tasks/{spelling}", headers=other.cookie)
        assert refused.status_code == 404
        assert problem_code(refused) == "task_not_found"
    kept = await gateway.get(f"/v1/tasks/{task_id}", headers=owner.cookie)
    assert kept.json()["task"]["status"] == "queued"
    unsigned = await gateway.delete(f"/v1/tasks/{task_id}")
    assert unsigned.status_code == 401


async def test_an_idempotency_key_names_a_new_task_after_its_task_is_deleted(
    gateway: httpx.AsyncClient, sign_up
) -> None:  # type: ignore[no-untyped-def]
    user = await sign_up()
    first = await _submit(gateway, user, **{"Idempotency-Key": "delete-me"})
    assert (await gateway.delete(f"/v1/tasks/{first}", headers=user.cookie)).status_code == 204
    second = await _submit(gateway, user, **{"Idempotency-Key": "delete-me"})
    assert second != first
    assert (await gateway.get(f"/v1/tasks/{second}", headers=user.cookie)).status_code == 200
