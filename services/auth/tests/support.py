"""What the auth tests share: a password, header and account helpers."""

from __future__ import annotations

import secrets
from typing import Any

from litestar.testing import AsyncTestClient

PASSWORD = "correct horse battery staple"
ORIGIN = {"origin": "http://127.0.0.1:8080"}


def cookie(token: str) -> dict[str, str]:
    return {"cookie": f"mf_session={token}"}


def new_email() -> str:
    return f"user-{secrets.token_hex(6)}@example.com"


def problem_code(response: Any) -> str:
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert set(body) >= {"type", "title", "status", "detail", "code", "request_id"}
    assert body["status"] == response.status_code
    return str(body["code"])


async def sign_up(client: AsyncTestClient) -> tuple[str, str, str]:
    """(email, user id, session token) of a new account."""
    email = new_email()
    response = await client.post("/v1/auth/sign-up", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201
    return email, response.json()["user"]["id"], response.cookies["mf_session"]
