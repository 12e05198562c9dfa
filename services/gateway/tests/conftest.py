from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from conftest import serving
from mediaflow_gateway.app import create_app
from mediaflow_gateway.settings import GatewaySettings

PASSWORD = "correct horse battery staple"


@dataclass
class User:
    id: str
    email: str
    token: str

    @property
    def cookie(self) -> dict[str, str]:
        return {"cookie": f"mf_session={self.token}"}


@pytest.fixture
async def sign_up(auth_url: str):  # type: ignore[no-untyped-def]
    async def make_user() -> User:
        email = f"user-{secrets.token_hex(6)}@example.com"
        async with httpx.AsyncClient(base_url=auth_url) as client:
            response = await client.post(
                "/v1/auth/sign-up", json={"email": email, "password": PASSWORD}
            )
        response.raise_for_status()
        return User(response.json()["user"]["id"], email, response.cookies["mf_session"])

    return make_user


@pytest.fixture(scope="session")
async def gateway(infra, auth_url: str) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    """The gateway served over HTTP (so its calls to auth run concurrently, as in production)."""
    settings = GatewaySettings(**infra.settings_kwargs(auth_internal_url=auth_url))
    async with serving(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        yield client
