"""The ``mediaflow-auth`` console script as a real process: the session check answers on
INTERNAL_PORT alone and nothing else does, so a NetworkPolicy can open that port to gateway
and notifier only."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from devstack import stack
from mediaflow_auth.settings import AuthSettings
from mediaflow_libs.service_tokens import issue_service_token
from services.auth.tests.support import PASSWORD, new_email, problem_code

VERIFY = "/internal/v1/sessions/verify"


@pytest.fixture
async def auth_process(infra: Any) -> AsyncIterator[tuple[str, str]]:
    """(public URL, internal URL) of a running auth process."""
    port, internal_port = stack.free_port(), stack.free_port()
    env = os.environ | {
        "PORT": str(port),
        "INTERNAL_PORT": str(internal_port),
        "DATABASE_URL": infra.database_url,
        "AMQP_URL": infra.amqp_url,
        "AMQP_NAMESPACE": infra.amqp_namespace,
        "SERVICE_SECRET": infra.secrets["SERVICE_SECRET"],
        "LOG_FORMAT": "json",
    }
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("mediaflow-auth")),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    public, internal = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{internal_port}"
    try:
        async with httpx.AsyncClient(base_url=public) as client, asyncio.timeout(30):
            while True:
                assert process.returncode is None, "auth exited during start-up"
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        yield public, internal
    finally:
        process.terminate()
        await process.wait()


async def test_the_session_check_answers_on_the_internal_port_only(
    auth_process: tuple[str, str], infra: Any
) -> None:
    public, internal = auth_process
    token = issue_service_token(infra.secrets["SERVICE_SECRET"], "gateway")
    service = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient() as client:
        signed_up = await client.post(
            f"{public}/v1/auth/sign-up", json={"email": new_email(), "password": PASSWORD}
        )
        assert signed_up.status_code == 201
        body = {"credential": signed_up.cookies["mf_session"]}

        verified = await client.post(f"{internal}{VERIFY}", json=body, headers=service)
        assert verified.status_code == 200
        assert verified.json()["user"]["id"] == signed_up.json()["user"]["id"]
        # still a service token is needed there
        anonymous = await client.post(f"{internal}{VERIFY}", json=body)
        assert problem_code(anonymous) == "service_unauthorized"

        # the public port: no internal route, whatever the spelling
        for path in (VERIFY, "//internal/v1/sessions/verify", f"{VERIFY}/", "/internal"):
            refused = await client.post(f"{public}{path}", json=body, headers=service)
            assert refused.status_code == 404, path
            assert problem_code(refused) == "not_found"

        # the internal port: nothing but the internal routes
        for method, path in (
            ("POST", "/v1/auth/sign-in"),
            ("GET", "/v1/auth/session"),
            ("GET", "/healthz"),
            ("GET", "/metrics"),
        ):
            response = await client.request(method, f"{internal}{path}", json={})
            assert response.status_code == 404, path


def test_internal_port_must_differ_from_port(infra: Any) -> None:
    with pytest.raises(ValidationError, match="INTERNAL_PORT must differ from PORT"):
        AuthSettings(**infra.settings_kwargs(port=9000, internal_port=9000))
