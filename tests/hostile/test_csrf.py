"""Cross-site unsafe requests: 403 ``csrf_rejected`` on every unsafe route, sign-up and sign-in
included, whatever credentials they carry (cookie, bearer key, none), nothing changed; clients
that name no origin (the CLI) are not subject to it."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from tests.hostile.sources import Origin
from tests.hostile.support import PASSWORD, User, World, assert_problem, sign_up

# What a browser sends when a page of another site makes the request.
FOREIGN = {
    "other-site": {"Origin": "https://evil.example"},
    "null-origin": {"Origin": "null"},
    "referer-only": {"Referer": "https://evil.example/attack.html"},
    "same-host-other-port": {"Origin": "http://127.0.0.1:1"},
    "https-twin": {"Origin": "https://127.0.0.1"},
    "suffix-trick": {"Origin": "http://127.0.0.1.evil.example"},
    "origin-with-path": {"Origin": "https://evil.example/path?x=1"},
    # No Origin or Referer (stripped by a privacy setting), but fetch metadata tells.
    "fetch-metadata-cross-site": {"Sec-Fetch-Site": "cross-site"},
    "fetch-metadata-same-site": {"Sec-Fetch-Site": "same-site"},
}


@dataclass
class Setup:
    user: User
    running_task: str
    key_id: str


@pytest.fixture(scope="module")
async def setup(hostile: World, hostile_origin: Origin) -> AsyncIterator[Setup]:
    user = await sign_up(hostile.url, "csrf")
    async with hostile.client() as client:
        submitted = await client.post(
            "/v1/tasks", json={"url": f"{hostile_origin.url}/hold/csrf"}, headers=user.bearer
        )
        assert submitted.status_code == 202, submitted.text
        task_id = submitted.json()["task"]["id"]
        keys = await client.get("/v1/auth/api-keys", headers=user.bearer)
        key_id = keys.json()["items"][0]["id"]
        deadline = asyncio.get_running_loop().time() + 10
        while (await client.get(f"/v1/tasks/{task_id}", headers=user.bearer)).json()["task"][
            "status"
        ] != "running":
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
    try:
        yield Setup(user=user, running_task=task_id, key_id=key_id)
    finally:
        async with hostile.client() as client:
            await client.post(f"/v1/tasks/{task_id}/cancel", headers=user.bearer)
        hostile_origin.release("csrf")


def _routes(setup: Setup, origin_url: str) -> list[tuple[str, str, object]]:
    return [
        ("POST", "/v1/tasks", {"url": f"{origin_url}/media.mp4"}),
        ("POST", f"/v1/tasks/{setup.running_task}/cancel", None),
        ("DELETE", f"/v1/tasks/{setup.running_task}", None),
        ("POST", "/v1/auth/api-keys", {"name": "planted"}),
        ("DELETE", f"/v1/auth/api-keys/{setup.key_id}", None),
        ("DELETE", "/v1/auth/sessions", None),
        ("POST", "/v1/auth/sign-out", None),
    ]


ROUTE_NAMES = [
    "submit",
    "cancel",
    "delete",
    "create-key",
    "delete-key",
    "sign-out-everywhere",
    "sign-out",
]


@pytest.mark.parametrize("route", range(len(ROUTE_NAMES)), ids=ROUTE_NAMES)
@pytest.mark.parametrize("foreign", list(FOREIGN))
async def test_a_cross_site_request_with_the_cookie_is_rejected(
    hostile: World, hostile_origin: Origin, setup: Setup, route: int, foreign: str
) -> None:
    method, path, body = _routes(setup, hostile_origin.url)[route]
    headers = {**setup.user.cookie, **FOREIGN[foreign]}
    before = await hostile.snapshot(setup.user)
    async with hostile.client() as client:
        response = await client.request(method, path, json=body, headers=headers)
        assert_problem(response, 403, "csrf_rejected")
        assert "set-cookie" not in response.headers, response.headers
        # The session the forged request carried still works.
        assert (await client.get("/v1/me", headers=setup.user.cookie)).status_code == 200
    after = await hostile.snapshot(setup.user)
    assert after == before
    assert dict(after.api_tasks)[setup.running_task] == "running"


async def test_same_origin_requests_with_the_cookie_pass(
    hostile: World, hostile_origin: Origin, setup: Setup
) -> None:
    """The control: the page's own origin is accepted (a key made and deleted, nothing else)."""
    same = {**setup.user.cookie, "Origin": hostile.url, "Referer": f"{hostile.url}/"}
    async with hostile.client() as client:
        created = await client.post("/v1/auth/api-keys", json={"name": "same-origin"}, headers=same)
        assert created.status_code == 201, created.text
        deleted = await client.delete(f"/v1/auth/api-keys/{created.json()['id']}", headers=same)
        assert deleted.status_code == 204, deleted.text


@pytest.mark.parametrize("foreign", ["other-site", "null-origin", "referer-only"])
async def test_a_cross_site_request_is_refused_whatever_its_credentials(
    hostile: World, hostile_origin: Origin, setup: Setup, foreign: str
) -> None:
    """A bearer key (or no credential at all) does not make another site's page trusted."""
    before = await hostile.snapshot(setup.user)
    async with hostile.client() as client:
        for credentials in (setup.user.bearer, {}):
            for method, path, body in _routes(setup, hostile_origin.url):
                response = await client.request(
                    method, path, json=body, headers={**credentials, **FOREIGN[foreign]}
                )
                assert_problem(response, 403, "csrf_rejected")
    assert await hostile.snapshot(setup.user) == before


async def test_bearer_clients_that_send_no_origin_pass(
    hostile: World, hostile_origin: Origin
) -> None:
    """The CLI and scripts are no browser page: no Origin, no Sec-Fetch-Site, no refusal."""
    user = await sign_up(hostile.url, "csrf-bearer")
    headers = user.bearer
    async with hostile.client() as client:
        submitted = await client.post(
            "/v1/tasks", json={"url": f"{hostile_origin.url}/media.mp4"}, headers=headers
        )
        assert submitted.status_code == 202, submitted.text
        task_id = submitted.json()["task"]["id"]
        created = await client.post(
            "/v1/auth/api-keys", json={"name": "by-bearer"}, headers=headers
        )
        assert created.status_code == 201, created.text
        deleted = await client.delete(f"/v1/auth/api-keys/{created.json()['id']}", headers=headers)
        assert deleted.status_code == 204, deleted.text
    task = await hostile.wait_terminal(user, task_id)
    assert task["status"] in ("succeeded", "canceled"), task
    async with hostile.client() as client:
        canceled = await client.post(f"/v1/tasks/{task_id}/cancel", headers=headers)
    assert_problem(canceled, 409, "task_finished")


async def _accounts_and_sessions(hostile: World, email: str) -> tuple[int, int]:
    async with hostile.pool.acquire() as con:
        row = await con.fetchrow(
            """SELECT count(DISTINCT u.id) AS users, count(s.*) AS sessions
               FROM auth.users u LEFT JOIN auth.sessions s ON s.user_id = u.id
               WHERE lower(u.email) = lower($1)""",
            email,
        )
    assert row is not None
    return int(row["users"]), int(row["sessions"])


LOGIN_CSRF = {
    "other-site": {"Origin": "https://evil.example"},
    "fetch-metadata-cross-site": {"Sec-Fetch-Site": "cross-site"},
}


@pytest.mark.parametrize("content_type", ["text/plain", "application/json"])
@pytest.mark.parametrize("route", ["sign-in", "sign-up"])
@pytest.mark.parametrize("foreign", list(LOGIN_CSRF))
async def test_another_sites_page_cannot_sign_a_visitor_in(
    hostile: World, route: str, content_type: str, foreign: str
) -> None:
    """Login CSRF: a hostile page posts the attacker's credentials (a text/plain body needs no
    preflight) to sign the visitor into the attacker's account. Refused, no cookie set."""
    if route == "sign-in":
        email = (await sign_up(hostile.url, "csrf-login")).email
    else:
        email = f"csrf-login-{secrets.token_hex(6)}@example.com"
    before = await _accounts_and_sessions(hostile, email)
    body = json.dumps({"email": email, "password": PASSWORD}).encode()
    async with hostile.client() as client:
        response = await client.post(
            f"/v1/auth/{route}",
            content=body,
            headers={"Content-Type": content_type, **LOGIN_CSRF[foreign]},
        )
    assert_problem(response, 403, "csrf_rejected")
    assert "set-cookie" not in response.headers, response.headers
    assert await _accounts_and_sessions(hostile, email) == before


async def test_the_pages_own_origin_and_the_cli_still_sign_in(hostile: World) -> None:
    user = await sign_up(hostile.url, "csrf-login")
    credentials = {"email": user.email, "password": PASSWORD}
    async with hostile.client() as client:
        for headers in (
            {"Origin": hostile.url, "Sec-Fetch-Site": "same-origin"},
            {"Sec-Fetch-Site": "same-origin"},
            {},
        ):
            response = await client.post("/v1/auth/sign-in", json=credentials, headers=headers)
            assert response.status_code == 200, (headers, response.text)
            assert response.cookies.get("mf_session"), headers


async def test_safe_methods_are_not_refused_for_their_origin(hostile: World, setup: Setup) -> None:
    headers = {**setup.user.cookie, **FOREIGN["other-site"]}
    async with hostile.client() as client:
        for path in (
            "/v1/me",
            "/v1/tasks",
            f"/v1/tasks/{setup.running_task}",
            "/v1/auth/session",
            "/v1/auth/api-keys",
        ):
            response = await client.get(path, headers=headers)
            assert response.status_code == 200, f"{path}: {response.text}"
