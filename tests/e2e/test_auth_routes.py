"""Every auth route and error code of API.md, through the ingress, as a browser or a script
meets them."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import httpx
import pytest

from devstack import stack
from tests.hostile.support import assert_problem

PASSWORD = "a fine passphrase"


@pytest.fixture
async def client(running_stack: stack.StackConfig) -> AsyncIterator[httpx.AsyncClient]:
    # The page's own origin, as a browser sends it on every unsafe request.
    headers = {"Origin": running_stack.public_url}
    async with httpx.AsyncClient(
        base_url=running_stack.public_url, headers=headers, timeout=10
    ) as client:
        yield client


def _email() -> str:
    return f"routes-{secrets.token_hex(6)}@example.com"


def _session_cookie(response: httpx.Response) -> str:
    (header,) = [h for h in response.headers.get_list("set-cookie") if h.startswith("mf_session=")]
    return header


async def test_sign_up_sets_the_cookie_exactly_and_refuses_what_api_md_lists(
    client: httpx.AsyncClient,
) -> None:
    email = _email()
    created = await client.post(
        "/v1/auth/sign-up", json={"email": email, "password": PASSWORD, "name": "Ada"}
    )
    assert created.status_code == 201, created.text
    user = created.json()["user"]
    assert set(user) == {"id", "email", "name", "created_at"}
    assert (user["email"], user["name"]) == (email, "Ada")
    attributes = [part.strip() for part in _session_cookie(created).split(";")]
    assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= set(attributes)
    assert not any(a.lower().startswith(("domain", "secure")) for a in attributes)

    client.cookies.clear()
    taken = await client.post(
        "/v1/auth/sign-up", json={"email": f"  {email.upper()} ", "password": PASSWORD}
    )
    assert_problem(taken, 409, "email_taken")
    bad_email = await client.post(
        "/v1/auth/sign-up", json={"email": "nobody", "password": PASSWORD}
    )
    assert_problem(bad_email, 422, "invalid_email")
    weak = await client.post("/v1/auth/sign-up", json={"email": _email(), "password": "7 chars"})
    assert_problem(weak, 422, "weak_password")
    assert "set-cookie" not in taken.headers and "set-cookie" not in weak.headers


async def test_sign_in_gives_a_fresh_session_and_limits_failures(
    client: httpx.AsyncClient,
) -> None:
    email = _email()
    first = await client.post("/v1/auth/sign-up", json={"email": email, "password": PASSWORD})
    client.cookies.clear()
    signed_in = await client.post(
        "/v1/auth/sign-in", json={"email": email.upper(), "password": PASSWORD}
    )
    assert signed_in.status_code == 200, signed_in.text
    assert set(signed_in.json()) == {"user", "session"}
    assert set(signed_in.json()["session"]) == {"id", "expires_at"}
    assert _session_cookie(signed_in) != _session_cookie(first)

    client.cookies.clear()
    for _ in range(10):  # SIGN_IN_MAX_FAILURES_PER_ACCOUNT
        wrong = await client.post("/v1/auth/sign-in", json={"email": email, "password": "wrong!!!"})
        assert_problem(wrong, 401, "invalid_credentials")
    limited = await client.post("/v1/auth/sign-in", json={"email": email, "password": PASSWORD})
    assert_problem(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) > 0


async def test_sign_out_and_sign_out_everywhere_revoke(client: httpx.AsyncClient) -> None:
    email = _email()
    await client.post("/v1/auth/sign-up", json={"email": email, "password": PASSWORD})
    assert (await client.get("/v1/auth/session")).status_code == 200
    token = client.cookies["mf_session"]
    signed_out = await client.post("/v1/auth/sign-out")
    assert signed_out.status_code == 204
    assert "Max-Age=0" in _session_cookie(signed_out) or "expires=" in _session_cookie(signed_out)
    client.cookies.clear()
    old = {"Cookie": f"mf_session={token}"}
    assert_problem(await client.get("/v1/auth/session", headers=old), 401, "session_revoked")
    assert_problem(await client.get("/v1/me", headers=old), 401, "session_revoked")

    sessions = []
    for _ in range(2):
        client.cookies.clear()
        await client.post("/v1/auth/sign-in", json={"email": email, "password": PASSWORD})
        sessions.append({"Cookie": f"mf_session={client.cookies['mf_session']}"})
    client.cookies.clear()
    assert (await client.delete("/v1/auth/sessions", headers=sessions[0])).status_code == 204
    for cookie in sessions:
        assert_problem(await client.get("/v1/auth/session", headers=cookie), 401, "session_revoked")
    assert_problem(await client.get("/v1/auth/session"), 401, "session_missing")


async def test_api_keys_are_shown_once_track_use_and_are_deleted(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/v1/auth/sign-up", json={"email": _email(), "password": PASSWORD})
    created = await client.post("/v1/auth/api-keys", json={"name": "ci"})
    assert created.status_code == 201, created.text
    assert set(created.json()) == {"id", "name", "key", "created_at"}
    key, key_id = created.json()["key"], created.json()["id"]

    (listed,) = (await client.get("/v1/auth/api-keys")).json()["items"]
    assert listed == {**listed, "id": key_id, "name": "ci", "last_used_at": None}
    assert key not in str(listed)
    bearer = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=str(client.base_url), timeout=10) as script:
        assert (await script.get("/v1/me", headers=bearer)).status_code == 200
    (used,) = (await client.get("/v1/auth/api-keys")).json()["items"]
    assert used["last_used_at"] is not None

    assert (await client.delete(f"/v1/auth/api-keys/{key_id}")).status_code == 204
    assert_problem(await client.delete(f"/v1/auth/api-keys/{key_id}"), 404, "api_key_not_found")
    assert (await client.get("/v1/auth/api-keys")).json()["items"] == []
