"""TASK_COST_CREDITS=0 (and SIGNUP_CREDITS=0), for self-hosters who want no credits: tasks
are accepted with a zero balance, succeed or fail and are refunded nothing, and the ledger
holds no rows of 0. Real auth, gateway and worker, PostgreSQL, RabbitMQ and S3."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from conftest import Infra, serving
from devstack import media
from mediaflow_gateway.app import create_app
from mediaflow_gateway.settings import GatewaySettings
from mediaflow_libs.amqp import Topology
from services.worker.tests.support import eventually, own_namespace, running, worker_settings


@pytest.fixture(scope="module")
async def free(
    infra: Infra, auth_url: str, db_pool: asyncpg.Pool
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway that charges nothing and grants nothing, and a worker on its jobs queue."""
    worker = worker_settings(infra)
    gateway = GatewaySettings(
        **infra.settings_kwargs(
            auth_internal_url=auth_url,
            amqp_namespace=worker.amqp_namespace,
            task_cost_credits=0,
            signup_credits=0,
        )
    )
    async with (
        own_namespace(infra, db_pool, Topology(worker.amqp_namespace)),
        serving(create_app(gateway)) as url,
        running(worker, asyncio.Event()),
        httpx.AsyncClient(base_url=url, timeout=15) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = tmp_path_factory.mktemp("free-origin")
    media.write_sample_mp4(directory / "free.mp4", 256 * 1024)
    with media.LocalOrigin(directory) as server:
        yield server.url


async def test_tasks_cost_nothing_end_to_end(
    free: httpx.AsyncClient, auth_url: str, db_pool: asyncpg.Pool, origin: str
) -> None:
    async with httpx.AsyncClient(base_url=auth_url) as auth:
        signed_up = await auth.post(
            "/v1/auth/sign-up",
            json={"email": f"free-{secrets.token_hex(4)}@example.com", "password": "long enough"},
        )
    user_id = signed_up.json()["user"]["id"]
    cookie = {"cookie": f"mf_session={signed_up.cookies['mf_session']}"}
    assert (await free.get("/v1/me", headers=cookie)).json()["credits"]["balance"] == 0

    ids = {}
    for name, path in (("ok", "/free.mp4"), ("missing", "/missing.mp4"), ("canceled", "/free.mp4")):
        submitted = await free.post("/v1/tasks", json={"url": origin + path}, headers=cookie)
        assert submitted.status_code == 202, submitted.text
        ids[name] = submitted.json()["task"]["id"]
    # Canceled (or, had the worker been quicker, succeeded): either way nothing moves.
    await free.post(f"/v1/tasks/{ids['canceled']}/cancel", headers=cookie)

    async def ended() -> bool:
        statuses = await db_pool.fetch(
            "SELECT status FROM media.tasks WHERE id = ANY($1::uuid[])", list(ids.values())
        )
        return all(row["status"] in ("succeeded", "failed", "canceled") for row in statuses)

    await eventually(ended, within=30)
    tasks = {
        name: (await free.get(f"/v1/tasks/{task_id}", headers=cookie)).json()["task"]
        for name, task_id in ids.items()
    }
    assert tasks["ok"]["status"] == "succeeded", tasks["ok"]
    assert tasks["missing"]["status"] == "failed", tasks["missing"]
    assert (await free.get(f"/v1/tasks/{ids['ok']}/download", headers=cookie)).status_code == 302
    assert (await free.delete(f"/v1/tasks/{ids['ok']}", headers=cookie)).status_code == 204

    assert (await free.get("/v1/me", headers=cookie)).json()["credits"]["balance"] == 0
    ledger = await db_pool.fetch("SELECT * FROM media.credit_ledger WHERE user_id = $1", user_id)
    assert ledger == []


async def test_the_402_names_the_cost_in_words(infra: Infra, auth_url: str) -> None:
    settings = GatewaySettings(
        **infra.settings_kwargs(auth_internal_url=auth_url, signup_credits=0)
    )
    async with (
        serving(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url) as gateway,
        httpx.AsyncClient(base_url=auth_url) as auth,
    ):
        signed_up = await auth.post(
            "/v1/auth/sign-up",
            json={"email": f"poor-{secrets.token_hex(4)}@example.com", "password": "long enough"},
        )
        cookie = {"cookie": f"mf_session={signed_up.cookies['mf_session']}"}
        refused = await gateway.post(
            "/v1/tasks", json={"url": "https://media.example/a.mp4"}, headers=cookie
        )
    assert refused.status_code == 402
    assert refused.json()["code"] == "insufficient_credits"
    assert refused.json()["detail"] == "A task costs 1 credit; the balance is lower."
