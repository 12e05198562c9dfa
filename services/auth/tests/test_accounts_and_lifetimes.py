"""Accounts and session lifetimes: case-insensitive emails, rehash on sign-in when the
argon2 parameters change, the sliding idle lifetime capped by the absolute one, and the
per-address sign-in limit."""

from __future__ import annotations

import secrets

import httpx
from argon2 import PasswordHasher
from litestar.testing import AsyncTestClient

from conftest import serving
from mediaflow_auth.app import create_app
from mediaflow_auth.settings import AuthSettings
from services.auth.tests.support import PASSWORD, cookie, new_email, problem_code, sign_up


async def test_emails_are_unique_whatever_their_case(auth_client: AsyncTestClient) -> None:
    email, _, _ = await sign_up(auth_client)
    shouted = await auth_client.post(
        "/v1/auth/sign-up", json={"email": email.upper(), "password": PASSWORD}
    )
    assert shouted.status_code == 409
    assert problem_code(shouted) == "email_taken"
    signed_in = await auth_client.post(
        "/v1/auth/sign-in", json={"email": email.upper(), "password": PASSWORD}
    )
    assert signed_in.status_code == 200


async def test_a_weaker_stored_hash_is_replaced_at_sign_in(
    auth_client: AsyncTestClient,
    db_pool,  # type: ignore[no-untyped-def]
) -> None:
    email, user_id, _ = await sign_up(auth_client)
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    await db_pool.execute("UPDATE auth.users SET password_hash = $2 WHERE id = $1", user_id, weak)
    signed_in = await auth_client.post(
        "/v1/auth/sign-in", json={"email": email, "password": PASSWORD}
    )
    assert signed_in.status_code == 200
    stored = await db_pool.fetchval("SELECT password_hash FROM auth.users WHERE id = $1", user_id)
    assert stored.startswith("$argon2id$")
    assert "m=19456,t=2,p=1" in stored
    again = await auth_client.post("/v1/auth/sign-in", json={"email": email, "password": PASSWORD})
    assert again.status_code == 200


async def test_use_slides_the_idle_expiry_but_never_past_the_absolute_one(
    auth_client: AsyncTestClient,
    db_pool,  # type: ignore[no-untyped-def]
) -> None:
    _, user_id, token = await sign_up(auth_client)
    # A session last used two hours ago, idle-expiring in a minute, absolute in one hour.
    await db_pool.execute(
        """UPDATE auth.sessions SET last_seen_at = now() - interval '2 hours',
                  idle_expires_at = now() + interval '1 minute',
                  absolute_expires_at = now() + interval '1 hour'
           WHERE user_id = $1""",
        user_id,
    )
    used = await auth_client.get("/v1/auth/session", headers=cookie(token))
    assert used.status_code == 200
    row = await db_pool.fetchrow(
        "SELECT idle_expires_at, absolute_expires_at FROM auth.sessions WHERE user_id = $1", user_id
    )
    # Slid forward by the idle lifetime (7 days), so capped at the absolute expiry.
    assert row["idle_expires_at"] == row["absolute_expires_at"]
    await db_pool.execute(
        """UPDATE auth.sessions SET absolute_expires_at = now() - interval '1 second'
           WHERE user_id = $1""",
        user_id,
    )
    expired = await auth_client.get("/v1/auth/session", headers=cookie(token))
    assert expired.status_code == 401
    assert problem_code(expired) == "session_expired"


async def test_failed_sign_ins_are_limited_per_client_address(infra) -> None:  # type: ignore[no-untyped-def]
    """Behind the ingress the client address comes from X-Forwarded-For; one address failing
    on many accounts is stopped, and another address is not."""
    settings = AuthSettings(**infra.settings_kwargs(sign_in_max_failures_per_ip=3))
    attacker = f"198.51.100.{secrets.randbelow(250) + 1}"
    bystander = f"203.0.113.{secrets.randbelow(250) + 1}"
    async with serving(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        for _ in range(3):
            wrong = await client.post(
                "/v1/auth/sign-in",
                json={"email": new_email(), "password": "wrong password"},
                headers={"X-Forwarded-For": attacker},
            )
            assert wrong.status_code == 401
        limited = await client.post(
            "/v1/auth/sign-in",
            json={"email": new_email(), "password": "wrong password"},
            headers={"X-Forwarded-For": attacker},
        )
        assert limited.status_code == 429
        assert limited.json()["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) > 0
        other = await client.post(
            "/v1/auth/sign-in",
            json={"email": new_email(), "password": "wrong password"},
            headers={"X-Forwarded-For": bystander},
        )
        assert other.status_code == 401
