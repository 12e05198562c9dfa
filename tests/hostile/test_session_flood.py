"""An unauthenticated client floods gateway and notifier with junk tokens while signed-in users
keep working: every junk token is 401 ``session_invalid``, and none of it reaches the users as
503 ``auth_unavailable`` (a client's bad token is never taken for auth failing, so it cannot
open the circuit breaker for anyone else)."""

from __future__ import annotations

import asyncio
import collections
import secrets

import httpx

from tests.hostile.support import User, World, assert_problem, new_client, sign_in, sign_up

JUNK_TOKENS = 100
JUNK_BYTES = 5 * 1024
JUNK_ROUTES = ("/v1/me", "/v1/tasks", "/v1/events")
JUNK_IN_FLIGHT = 16
USERS = 20
ROUNDS_AT_LEAST = 2
SESSIONS_EACH = 4


def _junk_token() -> str:
    """5 KiB in a token's own alphabet: only its length tells it from a real one."""
    return secrets.token_urlsafe(JUNK_BYTES * 3 // 4)


async def _status_of(
    client: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> httpx.Response:
    if path == "/v1/events":
        # A stream when accepted: its first line shows it open, then hang up.
        async with client.stream("GET", path, headers=headers) as response:
            if response.status_code == 200:
                async for _ in response.aiter_lines():
                    break
            else:
                await response.aread()
            return response
    return await client.get(path, headers=headers)


async def _flood(world: World, refused: list[httpx.Response]) -> None:
    """Every junk token as a bearer and as a cookie, on each route, many at once."""
    requests = [
        (path, headers)
        for token in (_junk_token() for _ in range(JUNK_TOKENS))
        for headers in ({"Authorization": f"Bearer {token}"}, {"Cookie": f"mf_session={token}"})
        for path in JUNK_ROUTES
    ]
    queue: asyncio.Queue[tuple[str, dict[str, str]]] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)

    async def send() -> None:
        async with new_client(world.url) as client:
            while not queue.empty():
                path, headers = queue.get_nowait()
                refused.append(await _status_of(client, path, headers))

    await asyncio.gather(*(send() for _ in range(JUNK_IN_FLIGHT)))


async def _keep_working(
    world: World,
    sessions: list[dict[str, str]],
    flooding: asyncio.Task[None],
    statuses: list[tuple[str, int]],
) -> None:
    """Use a session gateway and notifier have not checked yet each round (so each request
    asks auth), reading ``/v1/me`` and opening an event stream, for as long as the flood
    lasts. The sessions are made before the flood: sign-in hashing would otherwise load auth
    with the test's own work, and a check slowed past its timeout is a real 503."""
    rounds = 0
    async with new_client(world.url) as client:
        while not flooding.done() or rounds < ROUNDS_AT_LEAST:
            cookie = sessions[min(rounds, len(sessions) - 1)]
            for path in ("/v1/me", "/v1/events"):
                response = await _status_of(client, path, cookie)
                statuses.append((path, response.status_code))
            rounds += 1


async def _sessions(world: World, user: User) -> list[dict[str, str]]:
    return [
        {"Cookie": f"mf_session={await sign_in(world.url, user)}"} for _ in range(SESSIONS_EACH)
    ]


async def test_junk_tokens_cannot_take_sessions_down_for_signed_in_users(world: World) -> None:
    users = await asyncio.gather(*(sign_up(world.url, "flood") for _ in range(USERS)))
    sessions = await asyncio.gather(*(_sessions(world, user) for user in users))
    refused: list[httpx.Response] = []
    statuses: list[tuple[str, int]] = []
    flooding = asyncio.create_task(_flood(world, refused))
    await asyncio.gather(*(_keep_working(world, each, flooding, statuses) for each in sessions))
    await flooding

    counts = collections.Counter(status for _, status in statuses)
    junk = collections.Counter(response.status_code for response in refused)
    print(f"\njunk requests by status: {dict(junk)}; users' requests by status: {dict(counts)}")
    assert counts[503] == 0, f"signed-in users got 503 during the flood: {dict(counts)}"
    assert set(counts) == {200}, dict(counts)
    assert len(statuses) >= USERS * ROUNDS_AT_LEAST * 2
    assert len(refused) == JUNK_TOKENS * 2 * len(JUNK_ROUTES)
    for response in refused:
        assert_problem(response, 401, "session_invalid")
