"""Session checks as gateway replicas see them: revocation, auth outages, CSRF."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest

from conftest import serving, stack
from mediaflow_auth.app import create_app as create_auth
from mediaflow_auth.settings import AuthSettings
from mediaflow_gateway.app import create_app
from mediaflow_gateway.settings import GatewaySettings
from mediaflow_libs.problems import ProblemError
from mediaflow_libs.session_client import SessionClient


async def test_a_revoked_session_is_refused_by_every_replica_within_a_second(
    infra,
    auth_url: str,
    sign_up,  # type: ignore[no-untyped-def]
) -> None:
    user = await sign_up()
    settings = GatewaySettings(
        **infra.settings_kwargs(auth_internal_url=auth_url, auth_cache_seconds=30)
    )
    async with (
        serving(create_app(settings)) as first,
        serving(create_app(settings)) as second,
        httpx.AsyncClient() as client,
    ):
        for base in (first, second):  # both replicas now hold the session in their cache
            assert (await client.get(f"{base}/v1/me", headers=user.cookie)).status_code == 200
        signed_out = await client.post(f"{auth_url}/v1/auth/sign-out", headers=user.cookie)
        assert signed_out.status_code == 204
        started = time.monotonic()
        refused_after = {}
        while len(refused_after) < 2 and time.monotonic() - started < 3:
            for base in (first, second):
                if base in refused_after:
                    continue
                response = await client.get(f"{base}/v1/me", headers=user.cookie)
                if response.status_code == 401:
                    assert response.json()["code"] == "session_revoked"
                    refused_after[base] = time.monotonic() - started
            await asyncio.sleep(0.02)
    assert len(refused_after) == 2, "a replica kept accepting a revoked session"
    assert max(refused_after.values()) < 1.0, refused_after


async def test_auth_outage_gives_503_never_401_and_recovers(infra, sign_up) -> None:  # type: ignore[no-untyped-def]
    auth_port = stack.free_port()
    auth_settings = AuthSettings(**infra.settings_kwargs())
    gateway_settings = GatewaySettings(
        **infra.settings_kwargs(
            auth_internal_url=f"http://127.0.0.1:{auth_port}", auth_cache_seconds=0
        )
    )
    statuses: Counter[int] = Counter()
    async with (
        serving(create_app(gateway_settings)) as gateway,
        httpx.AsyncClient(timeout=5) as client,
    ):
        async with serving(create_auth(auth_settings), port=auth_port) as auth:
            signed_up = await client.post(
                f"{auth}/v1/auth/sign-up",
                json={
                    "email": f"outage-{time.monotonic_ns()}@example.com",
                    "password": "long enough",
                },
            )
            headers = {"cookie": f"mf_session={signed_up.cookies['mf_session']}"}
            assert (await client.get(f"{gateway}/v1/me", headers=headers)).status_code == 200
        # auth is down now: a steady stream of requests.
        down_until = time.monotonic() + 1.5
        while time.monotonic() < down_until:
            response = await client.get(f"{gateway}/v1/me", headers=headers)
            statuses[response.status_code] += 1
            if response.status_code == 503:
                assert response.json()["code"] == "auth_unavailable"
                assert int(response.headers["retry-after"]) > 0
            await asyncio.sleep(0.05)
        async with serving(create_auth(auth_settings), port=auth_port):
            back = time.monotonic()
            while (await client.get(f"{gateway}/v1/me", headers=headers)).status_code != 200:
                assert time.monotonic() - back < 5, "gateway did not recover within 5 s"
                await asyncio.sleep(0.05)
    assert statuses[401] == 0 and statuses[503] > 0, statuses


async def test_cookie_requests_from_another_origin_are_refused(
    gateway: httpx.AsyncClient, sign_up
) -> None:  # type: ignore[no-untyped-def]
    user = await sign_up()
    refused = await gateway.post(
        "/v1/tasks",
        json={"url": "https://media.example/v.mp4"},
        headers={**user.cookie, "origin": "https://evil.example"},
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == "csrf_rejected"
    listing = await gateway.get("/v1/tasks", headers=user.cookie)
    assert listing.json()["items"] == []
    allowed = await gateway.post(
        "/v1/tasks",
        json={"url": "https://media.example/v.mp4"},
        headers={**user.cookie, "origin": "http://127.0.0.1:8080"},
    )
    assert allowed.status_code == 202


async def test_api_key_works_wherever_the_cookie_does(
    gateway: httpx.AsyncClient, auth_url: str, sign_up
) -> None:  # type: ignore[no-untyped-def]
    user = await sign_up()
    async with httpx.AsyncClient(base_url=auth_url) as client:
        key = (
            await client.post("/v1/auth/api-keys", json={"name": "ci"}, headers=user.cookie)
        ).json()["key"]
    bearer = {"authorization": f"Bearer {key}"}
    me = await gateway.get("/v1/me", headers=bearer)
    assert me.status_code == 200
    assert me.json()["user"]["id"] == user.id
    # A client that is not a browser sends no Origin: its unsafe requests pass.
    submitted = await gateway.post(
        "/v1/tasks", json={"url": "https://media.example/k.mp4"}, headers=bearer
    )
    assert submitted.status_code == 202
    # Another site's page is refused whatever credentials it sends, a bearer key included.
    cross_site = await gateway.post(
        "/v1/tasks",
        json={"url": "https://media.example/k.mp4"},
        headers=bearer | {"origin": "https://other.example"},
    )
    assert cross_site.status_code == 403
    assert cross_site.json()["code"] == "csrf_rejected"


async def test_a_cached_session_check_never_outlives_the_session(
    infra,
    auth_url: str,
    sign_up,
    db_pool,  # type: ignore[no-untyped-def]
) -> None:
    # The gateway's own session client against the real auth, on a clock the test moves.
    user = await sign_up()
    settings = GatewaySettings(
        **infra.settings_kwargs(auth_internal_url=auth_url, auth_cache_seconds=30)
    )
    now = [1000.0]
    client = SessionClient.from_settings(
        settings,
        service_name="gateway",
        service_secret=settings.service_secret.get_secret_value(),
        clock=lambda: now[0],
    )
    try:
        await db_pool.execute(
            """UPDATE auth.sessions SET idle_expires_at = now() + interval '2 seconds'
               WHERE user_id = $1""",
            user.id,
        )
        fresh = await client.verify(user.token)  # and now in the cache, for 2 s at most
        assert fresh.user_id == user.id
        # auth would now refuse it; the cache still answers while the session had time left
        await db_pool.execute(
            """UPDATE auth.sessions SET idle_expires_at = now() - interval '1 second'
               WHERE user_id = $1""",
            user.id,
        )
        now[0] += 1.0
        assert (await client.verify(user.token)).user_id == user.id
        now[0] += 1.2  # past the session's end as it was when cached, long before 30 s
        with pytest.raises(ProblemError) as expired:
            await client.verify(user.token)
    finally:
        await client.aclose()
    assert expired.value.status_code == 401
    assert expired.value.code == "session_expired"
