"""Another user's ids, random ids and malformed ids on every route that takes one: 404, no data
of the owner's in the answer, nothing changed on either side."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from mediaflow_cli.sse import SseEvent, read_events
from tests.hostile.sources import Origin
from tests.hostile.support import User, World, assert_problem, forged_cursor, sign_up


@dataclass
class Victim:
    user: User
    tasks: dict[str, dict[str, Any]]  # by state: succeeded, failed, running
    key_id: str
    etags: dict[str, str]


@pytest.fixture(scope="module")
async def victim(hostile: World, hostile_origin: Origin) -> AsyncIterator[Victim]:
    user = await sign_up(hostile.url, "victim")
    # Source URLs of the victim's own, so that seeing one in an answer means a leak.
    mark = f"owner={user.id}"
    sources = {
        "succeeded": f"{hostile_origin.url}/media.mp4?{mark}",
        "failed": f"{hostile_origin.url}/not-media/html?{mark}",
        "running": f"{hostile_origin.url}/hold/victim?{mark}",
    }
    tasks: dict[str, dict[str, Any]] = {}
    etags = {}
    async with hostile.client() as client:
        for state, url in sources.items():
            response = await client.post("/v1/tasks", json={"url": url}, headers=user.bearer)
            assert response.status_code == 202, response.text
            tasks[state] = response.json()["task"]
        for state in ("succeeded", "failed"):
            tasks[state] = await hostile.wait_terminal(user, tasks[state]["id"])
            assert tasks[state]["status"] == state, tasks[state]
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            response = await client.get(f"/v1/tasks/{tasks['running']['id']}", headers=user.bearer)
            if response.json()["task"]["bytes_done"] > 0:
                break
            assert asyncio.get_running_loop().time() < deadline, response.text
            await asyncio.sleep(0.1)
        for state, task in tasks.items():
            response = await client.get(f"/v1/tasks/{task['id']}", headers=user.bearer)
            etags[state] = response.headers["etag"]
        keys = await client.get("/v1/auth/api-keys", headers=user.cookie)
        key_id = keys.json()["items"][0]["id"]
    try:
        yield Victim(user=user, tasks=tasks, key_id=key_id, etags=etags)
    finally:
        async with hostile.client() as client:
            await client.post(f"/v1/tasks/{tasks['running']['id']}/cancel", headers=user.bearer)
        hostile_origin.release("victim")


@pytest.fixture(scope="module")
async def attacker(hostile: World, hostile_origin: Origin) -> User:
    user = await sign_up(hostile.url, "attacker")
    async with hostile.client() as client:
        response = await client.post(
            "/v1/tasks", json={"url": f"{hostile_origin.url}/media.mp4"}, headers=user.bearer
        )
        assert response.status_code == 202, response.text
        await hostile.wait_terminal(user, response.json()["task"]["id"])
    return user


def _no_leak(response: httpx.Response, victim: Victim) -> None:
    text = response.text
    for task in victim.tasks.values():
        assert task["source_url"] not in text, text
    assert victim.user.email not in text, text
    assert victim.user.id not in text, text
    assert "location" not in response.headers, response.headers
    assert "etag" not in response.headers, response.headers


ROUTES = [
    ("GET", "/v1/tasks/{id}"),
    ("POST", "/v1/tasks/{id}/cancel"),
    ("DELETE", "/v1/tasks/{id}"),
    ("GET", "/v1/tasks/{id}/download"),
]


@pytest.mark.parametrize("state", ["succeeded", "failed", "running"])
@pytest.mark.parametrize(("method", "template"), ROUTES, ids=[f"{m} {t}" for m, t in ROUTES])
@pytest.mark.parametrize("carrier", ["cookie", "bearer"])
async def test_another_users_task_is_not_found(
    hostile: World,
    victim: Victim,
    attacker: User,
    state: str,
    method: str,
    template: str,
    carrier: str,
) -> None:
    task_id = victim.tasks[state]["id"]
    before = (await hostile.snapshot(victim.user), await hostile.snapshot(attacker))
    headers = attacker.cookie if carrier == "cookie" else attacker.bearer
    async with hostile.client() as client:
        for spelling in (
            task_id,
            task_id.upper(),
            task_id.replace("-", ""),
            f"{{{task_id}}}",
            f"urn:uuid:{task_id}",
        ):
            path = template.format(id=quote(spelling, safe=""))
            response = await client.request(method, path, headers=headers)
            assert_problem(response, 404, "task_not_found")
            _no_leak(response, victim)
        # A matching validator must not turn the 404 into a 304 (that would confirm the task).
        response = await client.get(
            f"/v1/tasks/{task_id}", headers={**headers, "If-None-Match": victim.etags[state]}
        )
        assert_problem(response, 404, "task_not_found")
    assert (await hostile.snapshot(victim.user), await hostile.snapshot(attacker)) == before


async def test_the_owner_still_sees_their_tasks(hostile: World, victim: Victim) -> None:
    """The control for the test above: the same requests by the owner succeed."""
    async with hostile.client() as client:
        for task in victim.tasks.values():
            response = await client.get(f"/v1/tasks/{task['id']}", headers=victim.user.bearer)
            assert response.status_code == 200, response.text
            assert response.json()["task"]["id"] == task["id"]
        download = await client.get(
            f"/v1/tasks/{victim.tasks['succeeded']['id']}/download", headers=victim.user.bearer
        )
        assert download.status_code == 302
        finished = await client.post(
            f"/v1/tasks/{victim.tasks['failed']['id']}/cancel", headers=victim.user.bearer
        )
        assert_problem(finished, 409, "task_finished")


async def test_another_users_tasks_never_appear_in_the_list(
    hostile: World, victim: Victim, attacker: User
) -> None:
    victim_ids = {task["id"] for task in victim.tasks.values()}
    newest = victim.tasks["running"]
    async with hostile.client() as client:
        page = await client.get("/v1/tasks", headers=attacker.bearer)
        assert page.status_code == 200, page.text
        assert not victim_ids & {task["id"] for task in page.json()["items"]}
        _no_leak(page, victim)
        # Neither a cursor forged from the victim's newest task nor one the gateway issued to
        # the victim pages anything for the attacker.
        issued = await client.get("/v1/tasks", params={"limit": 1}, headers=victim.user.bearer)
        cursors = [forged_cursor(newest["created_at"], newest["id"]), issued.json()["next_cursor"]]
        for cursor in cursors:
            response = await client.get(
                "/v1/tasks", params={"cursor": cursor}, headers=attacker.bearer
            )
            assert_problem(response, 422, "invalid_cursor")
            _no_leak(response, victim)


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "AAAA",
        forged_cursor("not a date", str(uuid.uuid4())),
        forged_cursor("2024-01-01T00:00:00+00:00", "not-a-uuid"),
        "WzEsMiwzXQ",  # [1,2,3]
        "eyJhIjoxfQ",  # {"a":1}
        "bnVsbA",  # null
        "WyIyMDI0LTAxLTAxIl0",  # ["2024-01-01"]
        "W251bGwsbnVsbF0",  # [null,null]
    ],
)
async def test_a_forged_cursor_is_invalid_cursor(
    hostile: World, attacker: User, cursor: str
) -> None:
    before = await hostile.snapshot(attacker)
    async with hostile.client() as client:
        response = await client.get("/v1/tasks", params={"cursor": cursor}, headers=attacker.bearer)
    assert_problem(response, 422, "invalid_cursor")
    assert await hostile.snapshot(attacker) == before


@pytest.mark.parametrize(
    "limit", ["0", "-1", "101", "abc", "1.5", "1e2", "²", "٣٣٣", " 5", "99999999999999999999999"]
)
async def test_a_bad_limit_is_refused(hostile: World, attacker: User, limit: str) -> None:
    async with hostile.client() as client:
        response = await client.get("/v1/tasks", params={"limit": limit}, headers=attacker.bearer)
    assert_problem(response, 422, "invalid_limit")


async def _collect(
    client: httpx.AsyncClient,
    params: list[tuple[str, str]],
    headers: dict[str, str],
    seconds: float,
) -> list[dict[str, Any]]:
    """The task events of an SSE stream during ``seconds``."""
    seen: list[dict[str, Any]] = []

    async def read() -> None:
        async with client.stream(
            "GET", "/v1/events", params=params, headers=headers, timeout=30
        ) as response:
            assert response.status_code == 200, await response.aread()
            async for item in read_events(response):
                if isinstance(item, SseEvent) and item.event == "task":
                    seen.append(json.loads(item.data))

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await read()
    return seen


async def test_another_users_tasks_never_appear_in_events(
    hostile: World, hostile_origin: Origin, attacker: User
) -> None:
    victim = await sign_up(hostile.url, "victim-events")
    async with hostile.client() as client:
        response = await client.post(
            "/v1/tasks", json={"url": f"{hostile_origin.url}/hold/events"}, headers=victim.bearer
        )
        victim_task = response.json()["task"]["id"]
        own = await client.post(
            "/v1/tasks",
            json={"url": f"{hostile_origin.url}/hold/events-own"},
            headers=attacker.bearer,
        )
        own_task = own.json()["task"]["id"]
        try:
            variants = [
                [("task", victim_task)],
                [("task", victim_task), ("task", own_task)],
                [],
                [("task", victim_task), ("last_event_id", "1")],
                [("last_event_id", "1")],
            ]
            streams = [
                asyncio.create_task(_collect(client, params, attacker.cookie, 2.0))
                for params in variants
            ]
            await asyncio.sleep(0.7)
            # Live changes of the victim's task while the attacker listens.
            await client.post(f"/v1/tasks/{victim_task}/cancel", headers=victim.bearer)
            results = await asyncio.gather(*streams)
        finally:
            await client.post(f"/v1/tasks/{own_task}/cancel", headers=attacker.bearer)
            hostile_origin.release("events")
            hostile_origin.release("events-own")
    # Both canceled while running: later tests snapshot the attacker, so let the workers
    # finish canceling (the upload aborted) before going on.
    await hostile.wait_terminal(victim, victim_task)
    await hostile.wait_terminal(attacker, own_task)
    for params, seen in zip(variants, results, strict=True):
        ids = {task["id"] for task in seen}
        assert victim_task not in ids, f"{params}: the victim's task leaked: {seen}"
        if ("task", own_task) in params or not params:
            assert own_task in ids, f"{params}: the attacker's own task is missing (the control)"


@pytest.mark.parametrize(
    "raw",
    [
        "not-a-uuid",
        "1",
        "-1",
        "' OR '1'='1",
        "%00",
        "a" * 1000,
        "\u202etask",
        "0x1234",
        "null",
        "[]",
        "*",
    ],
    ids=["word", "one", "minus", "sql", "nul", "long", "rtl", "hex", "null", "brackets", "star"],
)
async def test_malformed_task_ids_are_not_found(hostile: World, attacker: User, raw: str) -> None:
    before = await hostile.snapshot(attacker)
    async with hostile.client() as client:
        for method, template in ROUTES:
            response = await client.request(
                method, template.format(id=quote(raw, safe="")), headers=attacker.bearer
            )
            assert_problem(response, 404, "task_not_found")
        key = await client.delete(
            f"/v1/auth/api-keys/{quote(raw, safe='')}", headers=attacker.cookie
        )
        assert_problem(key, 404, "api_key_not_found")
        events = await client.get("/v1/events", params={"task": raw}, headers=attacker.bearer)
        assert_problem(events, 422, "invalid_task_id")
    assert await hostile.snapshot(attacker) == before


@pytest.mark.parametrize(
    "raw",
    [
        str(uuid.uuid4()),
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
    ],
)
async def test_unknown_task_ids_are_not_found(hostile: World, attacker: User, raw: str) -> None:
    before = await hostile.snapshot(attacker)
    async with hostile.client() as client:
        for method, template in ROUTES:
            response = await client.request(
                method, template.format(id=raw), headers=attacker.bearer
            )
            assert_problem(response, 404, "task_not_found")
        key = await client.delete(f"/v1/auth/api-keys/{raw}", headers=attacker.cookie)
        assert_problem(key, 404, "api_key_not_found")
    assert await hostile.snapshot(attacker) == before


@pytest.mark.parametrize("carrier", ["cookie", "bearer"])
async def test_another_users_api_key_cannot_be_deleted(
    hostile: World, victim: Victim, attacker: User, carrier: str
) -> None:
    before = (await hostile.snapshot(victim.user), await hostile.snapshot(attacker))
    headers = attacker.cookie if carrier == "cookie" else attacker.bearer
    async with hostile.client() as client:
        response = await client.delete(f"/v1/auth/api-keys/{victim.key_id}", headers=headers)
        assert_problem(response, 404, "api_key_not_found")
        _no_leak(response, victim)
        # The victim's key still works.
        assert (await client.get("/v1/me", headers=victim.user.bearer)).status_code == 200
    assert (await hostile.snapshot(victim.user), await hostile.snapshot(attacker)) == before


async def test_another_users_idempotency_key_does_not_replay_their_task(
    hostile: World, hostile_origin: Origin, victim: Victim, attacker: User
) -> None:
    """Idempotency keys belong to their user: the same key and body from someone else make a
    new task of theirs, never an answer with the owner's."""
    key = f"shared-key-{uuid.uuid4()}"
    body = {"url": f"{hostile_origin.url}/media.mp4?idempotency"}
    async with hostile.client() as client:
        first = await client.post(
            "/v1/tasks", json=body, headers={**victim.user.bearer, "Idempotency-Key": key}
        )
        assert first.status_code == 202, first.text
        await hostile.wait_terminal(victim.user, first.json()["task"]["id"])
        victim_before = await hostile.snapshot(victim.user)
        second = await client.post(
            "/v1/tasks", json=body, headers={**attacker.bearer, "Idempotency-Key": key}
        )
    assert second.status_code == 202, second.text
    assert second.json()["task"]["id"] != first.json()["task"]["id"]
    assert victim.user.id not in second.text
    await hostile.wait_terminal(attacker, second.json()["task"]["id"])
    assert await hostile.snapshot(victim.user) == victim_before
