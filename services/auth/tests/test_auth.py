from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from mediaflow_libs.service_tokens import issue_service_token
from services.auth.tests.support import PASSWORD, cookie, new_email, problem_code


async def test_sign_up_sets_the_cookie_exactly_as_the_contract_says(
    auth_client: AsyncTestClient,
) -> None:
    email = new_email()
    response = await auth_client.post(
        "/v1/auth/sign-up", json={"email": email, "password": PASSWORD, "name": "Ada"}
    )
    assert response.status_code == 201
    user = response.json()["user"]
    assert user["email"] == email
    assert user["name"] == "Ada"
    assert set(user) == {"id", "email", "name", "created_at"}
    cookie = response.headers["set-cookie"]
    parts = [part.strip() for part in cookie.split(";")]
    assert parts[0].startswith("mf_session=")
    assert len(parts[0]) > len("mf_session=") + 40
    assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= set(parts)
    assert "Secure" not in parts  # PUBLIC_URL is http here
    assert not any(part.lower().startswith("domain") for part in parts)


async def test_session_round_trip_and_sign_out_revokes(auth_client: AsyncTestClient) -> None:
    response = await auth_client.post(
        "/v1/auth/sign-up", json={"email": new_email(), "password": PASSWORD}
    )
    token = response.cookies["mf_session"]
    session = await auth_client.get("/v1/auth/session", headers=cookie(token))
    assert session.status_code == 200
    assert session.json()["user"]["id"] == response.json()["user"]["id"]

    signed_out = await auth_client.post("/v1/auth/sign-out", headers=cookie(token))
    assert signed_out.status_code == 204
    assert "mf_session=;" in signed_out.headers["set-cookie"]
    after = await auth_client.get("/v1/auth/session", headers=cookie(token))
    assert after.status_code == 401
    assert problem_code(after) == "session_revoked"


async def test_sign_in_issues_a_fresh_token_each_time(auth_client: AsyncTestClient) -> None:
    email = new_email()
    first = await auth_client.post("/v1/auth/sign-up", json={"email": email, "password": PASSWORD})
    second = await auth_client.post(
        "/v1/auth/sign-in", json={"email": email.upper(), "password": PASSWORD}
    )
    assert second.status_code == 200
    assert set(second.json()) == {"user", "session"}
    assert second.cookies["mf_session"] != first.cookies["mf_session"]


async def test_wrong_password_and_unknown_email_look_the_same(auth_client: AsyncTestClient) -> None:
    email = new_email()
    await auth_client.post("/v1/auth/sign-up", json={"email": email, "password": PASSWORD})
    wrong = await auth_client.post(
        "/v1/auth/sign-in", json={"email": email, "password": "nope-nope"}
    )
    unknown = await auth_client.post(
        "/v1/auth/sign-in", json={"email": new_email(), "password": PASSWORD}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert problem_code(wrong) == problem_code(unknown) == "invalid_credentials"
    assert wrong.json()["detail"] == unknown.json()["detail"]


async def test_sign_up_refuses_bad_input_with_its_code(auth_client: AsyncTestClient) -> None:
    email = new_email()
    cases = [
        ({"email": "not-an-email", "password": PASSWORD}, 422, "invalid_email"),
        ({"email": email, "password": "short"}, 422, "weak_password"),
        ({"email": email, "password": 12345678}, 422, "weak_password"),
    ]
    for body, status, code in cases:
        response = await auth_client.post("/v1/auth/sign-up", json=body)
        assert (response.status_code, problem_code(response)) == (status, code), body
    bad_json = await auth_client.post(
        "/v1/auth/sign-up", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400
    assert problem_code(bad_json) == "invalid_json"
    await auth_client.post("/v1/auth/sign-up", json={"email": email, "password": PASSWORD})
    taken = await auth_client.post(
        "/v1/auth/sign-up", json={"email": email.upper(), "password": PASSWORD}
    )
    assert taken.status_code == 409
    assert problem_code(taken) == "email_taken"


async def test_session_errors_name_their_reason(auth_client: AsyncTestClient) -> None:
    missing = await auth_client.get("/v1/auth/session")
    assert missing.status_code == 401
    assert problem_code(missing) == "session_missing"
    malformed = await auth_client.get("/v1/auth/session", headers=cookie("abc"))
    assert problem_code(malformed) == "session_invalid"
    forged = await auth_client.get("/v1/auth/session", headers=cookie(secrets.token_urlsafe(32)))
    assert forged.status_code == 401
    assert problem_code(forged) == "session_invalid"


async def test_expired_session_is_reported_as_expired(
    auth_client: AsyncTestClient, db_pool
) -> None:  # type: ignore[no-untyped-def]
    response = await auth_client.post(
        "/v1/auth/sign-up", json={"email": new_email(), "password": PASSWORD}
    )
    token = response.cookies["mf_session"]
    async with db_pool.acquire() as con:
        await con.execute(
            """UPDATE auth.sessions SET idle_expires_at = now() - interval '1 second'
               WHERE user_id = $1""",
            response.json()["user"]["id"],
        )
    expired = await auth_client.get("/v1/auth/session", headers=cookie(token))
    assert expired.status_code == 401
    assert problem_code(expired) == "session_expired"


async def test_internal_verify_requires_a_service_token(
    auth_client: AsyncTestClient, infra
) -> None:  # type: ignore[no-untyped-def]
    response = await auth_client.post(
        "/v1/auth/sign-up", json={"email": new_email(), "password": PASSWORD}
    )
    token = response.cookies["mf_session"]
    anonymous = await auth_client.post("/internal/v1/sessions/verify", json={"credential": token})
    assert anonymous.status_code == 403
    assert problem_code(anonymous) == "service_unauthorized"
    forged = issue_service_token("not-the-shared-secret-" + "x" * 20, "gateway")
    refused = await auth_client.post(
        "/internal/v1/sessions/verify",
        json={"credential": token},
        headers={"authorization": f"Bearer {forged}"},
    )
    assert refused.status_code == 403
    service_token = issue_service_token(infra.secrets["SERVICE_SECRET"], "gateway")
    verified = await auth_client.post(
        "/internal/v1/sessions/verify",
        json={"credential": token},
        headers={"authorization": f"Bearer {service_token}"},
    )
    assert verified.status_code == 200
    assert verified.json()["user"]["id"] == response.json()["user"]["id"]


@pytest.mark.parametrize(
    "credential",
    [
        "a" * 4000,
        "mfk_" + "a" * 4000,
        "\u00ff" * 600,
        "\x00" * 600,  # six bytes each in JSON
        "mfk_\ud800",  # a lone surrogate: no character at all
        "\ud800" * 600,
        "tok en",
        7,
        ["a"],
        {"a": "b"},
        True,
    ],
    ids=[
        "4000",
        "api-key-4000",
        "latin-1",
        "nul",
        "api-key-surrogate",
        "surrogates",
        "space",
        "number",
        "list",
        "object",
        "bool",
    ],
)
async def test_internal_verify_answers_unknown_for_any_credential_it_takes(
    auth_client: AsyncTestClient,
    infra: Any,
    credential: object,
) -> None:
    """Within its body limit, whatever it is given, verify says the credential is unknown:
    gateway and notifier must never be told auth failed because of what a client sent."""
    body = json.dumps({"credential": credential}).encode()
    assert len(body) <= 4096
    service_token = issue_service_token(infra.secrets["SERVICE_SECRET"], "gateway")
    response = await auth_client.post(
        "/internal/v1/sessions/verify",
        content=body,
        headers={"authorization": f"Bearer {service_token}", "content-type": "application/json"},
    )
    assert response.status_code == 401, response.text
    assert problem_code(response) == "session_invalid"
