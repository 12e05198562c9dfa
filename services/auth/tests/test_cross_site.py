"""No login CSRF: a page of another site cannot sign a visitor up or in (403 ``csrf_rejected``,
no cookie, nothing written), whatever the body's type; a JSON route refuses any other type of
body (415 ``unsupported_media_type``) before reading it. Clients that are not browsers (no
``Origin``, no ``Sec-Fetch-Site``) are not affected."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from services.auth.tests.support import ORIGIN, PASSWORD, cookie, new_email, problem_code, sign_up

EVIL = {"origin": "https://evil.example"}
# What a browser sends when another site's page makes the request, and no Origin is seen.
CROSS_SITE = {
    "origin": EVIL,
    "null-origin": {"origin": "null"},
    "referer-only": {"referer": "https://evil.example/attack.html"},
    "fetch-metadata": {"sec-fetch-site": "cross-site"},
}
# Bodies a page can send cross-site without a preflight: a form or text/plain (JSON inside).
SIMPLE_BODIES = {
    "text-plain-json": "text/plain",
    "form": "application/x-www-form-urlencoded",
    "json": "application/json",
}
WRONG_TYPES = {
    "text-plain": "text/plain",
    "text-plain-charset": "text/plain; charset=utf-8",
    "form": "application/x-www-form-urlencoded",
    "multipart": "multipart/form-data; boundary=XyZ",
    "json-lookalike": "application/jsonx",
    "json-suffix": "application/problem+json",
    "utf-16": "application/json; charset=utf-16",
}


async def _counts(pool: asyncpg.Pool, email: str) -> tuple[int, int]:
    """(accounts with this email, sessions of that account)."""
    async with pool.acquire() as con:
        row = await con.fetchrow(
            """SELECT count(DISTINCT u.id) AS users, count(s.*) AS sessions
               FROM auth.users u LEFT JOIN auth.sessions s ON s.user_id = u.id
               WHERE lower(u.email) = lower($1)""",
            email,
        )
    assert row is not None
    return int(row["users"]), int(row["sessions"])


def _body(fields: dict[str, Any], content_type: str) -> bytes:
    if content_type.startswith("application/x-www-form-urlencoded"):
        return "&".join(f"{k}={v}" for k, v in fields.items()).encode()
    return json.dumps(fields).encode()


@pytest.mark.parametrize("route", ["sign-up", "sign-in"])
@pytest.mark.parametrize("body_type", list(SIMPLE_BODIES))
@pytest.mark.parametrize("foreign", list(CROSS_SITE))
async def test_another_sites_page_cannot_sign_a_visitor_up_or_in(
    auth_client: AsyncTestClient, db_pool: asyncpg.Pool, route: str, body_type: str, foreign: str
) -> None:
    if route == "sign-in":
        email, _, _ = await sign_up(auth_client)  # the attacker's own account
    else:
        email = new_email()
    before = await _counts(db_pool, email)
    content_type = SIMPLE_BODIES[body_type]
    response = await auth_client.post(
        f"/v1/auth/{route}",
        content=_body({"email": email, "password": PASSWORD}, content_type),
        headers={"content-type": content_type} | CROSS_SITE[foreign],
    )
    assert response.status_code == 403, response.text
    assert problem_code(response) == "csrf_rejected"
    assert "set-cookie" not in response.headers
    assert await _counts(db_pool, email) == before


async def test_the_pages_own_origin_and_clients_without_one_sign_up_and_in(
    auth_client: AsyncTestClient,
) -> None:
    for headers in (
        ORIGIN,
        ORIGIN | {"sec-fetch-site": "same-origin"},
        {"referer": "http://127.0.0.1:8080/"},
        {"sec-fetch-site": "same-origin"},
        {"sec-fetch-site": "none"},
        {},  # the CLI, a script
    ):
        email = new_email()
        credentials = {"email": email, "password": PASSWORD}
        up = await auth_client.post("/v1/auth/sign-up", json=credentials, headers=headers)
        assert up.status_code == 201, (headers, up.text)
        signed_in = await auth_client.post("/v1/auth/sign-in", json=credentials, headers=headers)
        assert signed_in.status_code == 200, (headers, signed_in.text)
        assert signed_in.cookies.get("mf_session")


async def test_a_cross_site_request_is_refused_whatever_its_credentials(
    auth_client: AsyncTestClient,
) -> None:
    _, _, token = await sign_up(auth_client)
    key = (
        await auth_client.post("/v1/auth/api-keys", json={"name": "cli"}, headers=cookie(token))
    ).json()["key"]
    bearer = {"authorization": f"Bearer {key}"}
    for credentials in ({}, cookie(token), bearer):
        refused = await auth_client.post(
            "/v1/auth/api-keys", json={"name": "planted"}, headers=credentials | EVIL
        )
        assert refused.status_code == 403 and problem_code(refused) == "csrf_rejected"
    listed = await auth_client.get("/v1/auth/api-keys", headers=bearer)
    assert [item["name"] for item in listed.json()["items"]] == ["cli"]
    # A bearer client that is not a browser sends no Origin, and is not refused.
    assert (
        await auth_client.post("/v1/auth/api-keys", json={"name": "ci"}, headers=bearer)
    ).status_code == 201
    # Safe methods are not refused for their origin.
    assert (await auth_client.get("/v1/auth/session", headers=bearer | EVIL)).status_code == 200


@pytest.mark.parametrize("wrong", list(WRONG_TYPES))
async def test_a_json_route_refuses_another_media_type_and_writes_nothing(
    auth_client: AsyncTestClient, db_pool: asyncpg.Pool, wrong: str
) -> None:
    content_type = WRONG_TYPES[wrong]
    email, _, token = await sign_up(auth_client)
    fresh = new_email()
    before = await _counts(db_pool, email), await _counts(db_pool, fresh)
    calls = [
        ("/v1/auth/sign-up", {"email": fresh, "password": PASSWORD}, ORIGIN),
        ("/v1/auth/sign-in", {"email": email, "password": PASSWORD}, {}),
        ("/v1/auth/api-keys", {"name": "typed"}, cookie(token) | ORIGIN),
    ]
    for path, fields, headers in calls:
        response = await auth_client.post(
            path,
            content=_body(fields, content_type),
            headers=headers | {"content-type": content_type},
        )
        assert response.status_code == 415, (path, response.text)
        assert problem_code(response) == "unsupported_media_type"
        assert "set-cookie" not in response.headers
    assert (await _counts(db_pool, email), await _counts(db_pool, fresh)) == before
    keys = await auth_client.get("/v1/auth/api-keys", headers=cookie(token))
    assert keys.json()["items"] == []


async def test_a_body_without_a_content_type_is_refused_and_none_is_needed_without_one(
    auth_client: AsyncTestClient, db_pool: asyncpg.Pool
) -> None:
    email = new_email()
    body = json.dumps({"email": email, "password": PASSWORD}).encode()
    untyped = await auth_client.post("/v1/auth/sign-up", content=body)
    assert untyped.status_code == 415 and problem_code(untyped) == "unsupported_media_type"
    assert await _counts(db_pool, email) == (0, 0)
    typed = await auth_client.post(
        "/v1/auth/sign-up",
        content=body,
        headers={"content-type": "Application/JSON; Charset=UTF-8"},
    )
    assert typed.status_code == 201, typed.text
    # Routes without a body ask for no Content-Type.
    token = typed.cookies["mf_session"]
    assert (await auth_client.delete("/v1/auth/sessions", headers=cookie(token))).status_code == 204
    _, _, other = await sign_up(auth_client)
    assert (await auth_client.post("/v1/auth/sign-out", headers=cookie(other))).status_code == 204
