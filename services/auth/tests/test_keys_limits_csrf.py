from __future__ import annotations

import asyncio
import secrets

import pytest
import structlog
from litestar.testing import AsyncTestClient

from mediaflow_libs.logging import configure_logging
from services.auth.tests.support import ORIGIN, PASSWORD, cookie, sign_up


async def test_api_keys_are_shown_once_listed_used_and_deleted(
    auth_client: AsyncTestClient,
) -> None:
    _, _, token = await sign_up(auth_client)
    created = await auth_client.post(
        "/v1/auth/api-keys", json={"name": "laptop"}, headers=cookie(token) | ORIGIN
    )
    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"id", "name", "key", "created_at"}
    assert body["key"].startswith("mfk_")
    listing = await auth_client.get("/v1/auth/api-keys", headers=cookie(token))
    [item] = listing.json()["items"]
    assert item == {
        "id": body["id"],
        "name": "laptop",
        "created_at": body["created_at"],
        "last_used_at": None,
    }

    by_key = await auth_client.get(
        "/v1/auth/session", headers={"authorization": f"Bearer {body['key']}"}
    )
    assert by_key.status_code == 200
    [used] = (await auth_client.get("/v1/auth/api-keys", headers=cookie(token))).json()["items"]
    assert used["last_used_at"] is not None

    deleted = await auth_client.delete(
        f"/v1/auth/api-keys/{body['id']}", headers=cookie(token) | ORIGIN
    )
    assert deleted.status_code == 204
    again = await auth_client.delete(
        f"/v1/auth/api-keys/{body['id']}", headers=cookie(token) | ORIGIN
    )
    assert again.status_code == 404
    assert again.json()["code"] == "api_key_not_found"
    refused = await auth_client.get(
        "/v1/auth/session", headers={"authorization": f"Bearer {body['key']}"}
    )
    assert refused.status_code == 401
    assert refused.json()["code"] == "session_revoked"
    listed = await auth_client.get("/v1/auth/api-keys", headers=cookie(token))
    assert body["id"] not in [item["id"] for item in listed.json()["items"]]


async def test_another_users_api_key_cannot_be_deleted(auth_client: AsyncTestClient) -> None:
    _, _, owner = await sign_up(auth_client)
    _, _, other = await sign_up(auth_client)
    created = await auth_client.post("/v1/auth/api-keys", json={"name": "k"}, headers=cookie(owner))
    response = await auth_client.delete(
        f"/v1/auth/api-keys/{created.json()['id']}", headers=cookie(other)
    )
    assert response.status_code == 404
    assert response.json()["code"] == "api_key_not_found"


async def test_revoking_all_sessions_ends_every_session(auth_client: AsyncTestClient) -> None:
    email, _, first = await sign_up(auth_client)
    second = (
        await auth_client.post("/v1/auth/sign-in", json={"email": email, "password": PASSWORD})
    ).cookies["mf_session"]
    response = await auth_client.delete("/v1/auth/sessions", headers=cookie(first))
    assert response.status_code == 204
    for token in (first, second):
        after = await auth_client.get("/v1/auth/session", headers=cookie(token))
        assert after.status_code == 401
        assert after.json()["code"] == "session_revoked"


async def test_cross_origin_cookie_requests_are_refused(auth_client: AsyncTestClient) -> None:
    _, _, token = await sign_up(auth_client)
    for foreign in (
        {"origin": "https://evil.example"},
        {"referer": "https://evil.example/page"},
        {"origin": "null"},
    ):
        response = await auth_client.post(
            "/v1/auth/api-keys", json={"name": "x"}, headers=cookie(token) | foreign
        )
        assert response.status_code == 403 and response.json()["code"] == "csrf_rejected", foreign
    # Nothing was created by the refused requests.
    listing = await auth_client.get(
        "/v1/auth/api-keys", headers=cookie(token) | {"origin": "https://evil.example"}
    )
    assert listing.json()["items"] == []
    same = await auth_client.post(
        "/v1/auth/api-keys",
        json={"name": "x"},
        headers=cookie(token) | {"referer": "http://127.0.0.1:8080/app"},
    )
    assert same.status_code == 201


async def test_failed_sign_ins_are_rate_limited_per_account(auth_client: AsyncTestClient) -> None:
    email, _, _ = await sign_up(auth_client)
    for _ in range(10):
        wrong = await auth_client.post(
            "/v1/auth/sign-in", json={"email": email, "password": "wrong-password"}
        )
        assert wrong.status_code == 401
    limited = await auth_client.post(
        "/v1/auth/sign-in", json={"email": email, "password": PASSWORD}
    )
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited"
    assert 0 < int(limited.headers["retry-after"]) <= 900
    # Unknown accounts are limited the same way, so the answer tells nothing about existence.
    ghost = f"ghost-{secrets.token_hex(4)}@example.com"
    for _ in range(10):
        await auth_client.post(
            "/v1/auth/sign-in", json={"email": ghost, "password": "wrong-password"}
        )
    ghost_limited = await auth_client.post(
        "/v1/auth/sign-in", json={"email": ghost, "password": "x" * 8}
    )
    assert ghost_limited.status_code == 429


async def test_sign_ins_sent_at_once_cannot_pass_the_limit(auth_client: AsyncTestClient) -> None:
    email, _, _ = await sign_up(auth_client)
    answers = await asyncio.gather(
        *(
            auth_client.post("/v1/auth/sign-in", json={"email": email, "password": "wrong-pass"})
            for _ in range(14)
        )
    )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [401] * 10 + [429] * 4


async def test_no_secret_ever_reaches_the_logs(
    auth_client: AsyncTestClient, capfd: pytest.CaptureFixture[str]
) -> None:
    configure_logging("auth", "debug", "json", cache_loggers=False)
    try:
        await _exercise_every_secret(auth_client, capfd)
    finally:
        structlog.reset_defaults()


async def _exercise_every_secret(
    auth_client: AsyncTestClient, capfd: pytest.CaptureFixture[str]
) -> None:
    email = f"user-{secrets.token_hex(6)}@example.com"
    password = "a-very-secret-passphrase-" + secrets.token_hex(4)
    signed_up = await auth_client.post(
        "/v1/auth/sign-up", json={"email": email, "password": password}
    )
    token = signed_up.cookies["mf_session"]
    await auth_client.post("/v1/auth/sign-in", json={"email": email, "password": password + "x"})
    signed_in = await auth_client.post(
        "/v1/auth/sign-in", json={"email": email, "password": password}
    )
    key = (
        await auth_client.post("/v1/auth/api-keys", json={"name": "k"}, headers=cookie(token))
    ).json()["key"]
    await auth_client.get("/v1/auth/session", headers={"authorization": f"Bearer {key}"})
    await auth_client.post("/v1/auth/sign-out", headers=cookie(signed_in.cookies["mf_session"]))
    logs = "".join(capfd.readouterr())
    assert "auth.signed_in" in logs
    assert "invalid_credentials" in logs
    for secret in (password, token, signed_in.cookies["mf_session"], key):
        assert secret not in logs
