"""``mediaflow admin``, run as operators run it (the installed command, DATABASE_URL and the
broker in its environment), against real auth and gateway services."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from conftest import Infra, serving
from mediaflow_cli import admin as admin_module
from mediaflow_gateway.app import create_app
from mediaflow_gateway.settings import GatewaySettings

PASSWORD = "correct horse battery staple"
MEDIAFLOW = Path(sys.executable).with_name("mediaflow")


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str


@dataclass
class Account:
    id: str
    email: str
    cookie: dict[str, str]
    bearer: dict[str, str]


@pytest.fixture(scope="module")
async def gateway(infra: Infra, auth_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway that keeps a checked session for an hour: only the revocation announcement
    can make it refuse one sooner."""
    settings = GatewaySettings(
        **infra.settings_kwargs(auth_internal_url=auth_url, auth_cache_seconds=3600)
    )
    async with serving(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


@pytest.fixture
def admin(
    infra: Infra, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Awaitable[Ran]]:
    """``mediaflow admin ARGV`` in this process (the command's own code, minus the start of
    an interpreter): its exit code, stdout and stderr."""
    for name, value in _environment(infra).items():
        monkeypatch.setenv(name, value)

    async def run(*argv: str) -> Ran:
        capsys.readouterr()
        code = await admin_module.run(list(argv))
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


def _environment(infra: Infra) -> dict[str, str]:
    return {
        "DATABASE_URL": infra.database_url,
        "AMQP_URL": infra.amqp_url,
        "AMQP_NAMESPACE": infra.amqp_namespace,
    }


async def installed_command(infra: Infra, cwd: Path, *argv: str) -> Ran:
    """The installed ``mediaflow`` command, as an operator runs it."""
    process = await asyncio.create_subprocess_exec(
        str(MEDIAFLOW),
        "admin",
        *argv,
        env={"PATH": os.environ.get("PATH", ""), **_environment(infra)},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    ran = Ran(process.returncode or 0, out.decode(), err.decode())
    assert "Traceback" not in ran.stderr, ran.stderr
    return ran


async def _sign_up(auth_url: str) -> Account:
    email = f"admin-{secrets.token_hex(5)}@example.com"
    async with httpx.AsyncClient(base_url=auth_url) as client:
        signed_up = await client.post(
            "/v1/auth/sign-up", json={"email": email, "password": PASSWORD}
        )
        assert signed_up.status_code == 201, signed_up.text
        cookie = {"cookie": f"mf_session={signed_up.cookies['mf_session']}"}
        key = await client.post("/v1/auth/api-keys", json={"name": "script"}, headers=cookie)
        assert key.status_code == 201, key.text
    bearer = {"authorization": f"Bearer {key.json()['key']}"}
    return Account(signed_up.json()["user"]["id"], email, cookie, bearer)


async def _ledger(db_pool: asyncpg.Pool, user_id: str) -> list[tuple[Any, ...]]:
    rows = await db_pool.fetch(
        "SELECT delta, reason, note FROM media.credit_ledger WHERE user_id = $1 ORDER BY id",
        user_id,
    )
    return [tuple(row) for row in rows]


async def test_a_grant_is_a_ledger_row_with_its_reason_and_raises_the_balance(
    infra: Infra,
    auth_url: str,
    gateway: httpx.AsyncClient,
    db_pool: asyncpg.Pool,
    tmp_path: Path,
    admin: Callable[..., Awaitable[Ran]],
) -> None:
    user = await _sign_up(auth_url)
    assert (await gateway.get("/v1/me", headers=user.cookie)).json()["credits"]["balance"] == 10
    ran = await installed_command(
        infra, tmp_path, "credits", "grant", user.email.upper(), "5", "--reason", "ticket 42"
    )
    assert (ran.code, ran.stdout) == (0, "15\n"), ran
    assert "granted 5 credits" in ran.stderr
    me = await gateway.get("/v1/me", headers=user.cookie)
    assert me.json()["credits"]["balance"] == 15
    assert await _ledger(db_pool, user.id) == [(10, "signup", None), (5, "grant", "ticket 42")]

    ran = await admin("--json", "credits", "grant", user.email, "1", "--reason", "sorry")
    assert ran.code == 0, ran
    assert json.loads(ran.stdout) | {"user": None} == {"user": None, "granted": 1, "balance": 16}
    assert "granted 1 credit " in ran.stderr


async def test_a_grant_to_an_account_never_used_opens_it_with_the_sign_up_credits(
    infra: Infra,
    auth_url: str,
    gateway: httpx.AsyncClient,
    db_pool: asyncpg.Pool,
    tmp_path: Path,
    admin: Callable[..., Awaitable[Ran]],
) -> None:
    user = await _sign_up(auth_url)
    ran = await admin("credits", "grant", user.email, "3", "--reason", "welcome")
    assert (ran.code, ran.stdout) == (0, "13\n"), ran
    assert (await gateway.get("/v1/me", headers=user.cookie)).json()["credits"]["balance"] == 13


BAD_GRANTS = [
    ["0", "--reason", "nothing"],
    ["-3", "--reason", "taking"],
    ["5", "--reason", "   "],
    ["5"],
    ["many", "--reason", "x"],
]


async def test_a_bad_grant_is_refused_and_changes_nothing(
    infra: Infra,
    auth_url: str,
    db_pool: asyncpg.Pool,
    tmp_path: Path,
    admin: Callable[..., Awaitable[Ran]],
) -> None:
    user = await _sign_up(auth_url)
    before = await _ledger(db_pool, user.id)
    for argv in BAD_GRANTS:
        ran = await admin("credits", "grant", user.email, *argv)
        assert (ran.code, ran.stdout) == (2, ""), (argv, ran)
    assert await _ledger(db_pool, user.id) == before


async def test_an_unknown_email_is_named_and_exits_4(
    infra: Infra, tmp_path: Path, admin: Callable[..., Awaitable[Ran]]
) -> None:
    ran = await admin("--json", "credits", "grant", "nobody@example.com", "1", "--reason", "x")
    assert ran.code == 4, ran
    assert json.loads(ran.stdout)["error"]["code"] == "no_account"
    assert "nobody@example.com" in ran.stderr


async def test_users_list_shows_every_account_with_its_balance_and_status(
    infra: Infra,
    auth_url: str,
    gateway: httpx.AsyncClient,
    tmp_path: Path,
    admin: Callable[..., Awaitable[Ran]],
) -> None:
    user = await _sign_up(auth_url)
    await gateway.get("/v1/me", headers=user.cookie)
    listed = await admin("users", "list", "--json")
    assert listed.code == 0, listed
    (mine,) = [item for item in json.loads(listed.stdout)["items"] if item["id"] == user.id]
    assert mine | {"created_at": None} == {
        "id": user.id,
        "email": user.email,
        "name": None,
        "created_at": None,
        "disabled_at": None,
        "balance": 10,
        "tasks": 0,
    }
    table = await admin("users", "list")
    assert table.stdout.splitlines()[0].split("\t") == [
        "email",
        "id",
        "created_at",
        "balance",
        "tasks",
        "status",
    ]
    (row,) = [line.split("\t") for line in table.stdout.splitlines() if user.id in line]
    assert (row[0], row[3], row[5]) == (user.email, "10", "active")


async def test_a_disabled_account_is_refused_at_once_and_cannot_sign_in(
    infra: Infra,
    auth_url: str,
    gateway: httpx.AsyncClient,
    tmp_path: Path,
    admin: Callable[..., Awaitable[Ran]],
) -> None:
    user = await _sign_up(auth_url)
    # Both credentials checked and now cached by the gateway (for an hour).
    for credential in (user.cookie, user.bearer):
        assert (await gateway.get("/v1/me", headers=credential)).status_code == 200
    ran = await admin("users", "disable", user.email)
    assert (ran.code, ran.stdout) == (0, f"{user.email}\n"), ran
    assert "1 session and 1 API key revoked" in ran.stderr

    for credential in (user.cookie, user.bearer):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (response := await gateway.get("/v1/me", headers=credential)).status_code == 200:
            assert loop.time() < deadline, "the gateway kept accepting a disabled account"
            await asyncio.sleep(0.05)
        assert response.status_code == 401
        assert response.json()["code"] == "session_revoked"
        submitted = await gateway.post(
            "/v1/tasks", json={"url": "https://media.example/a.mp4"}, headers=credential
        )
        assert submitted.status_code == 401

    async with httpx.AsyncClient(base_url=auth_url) as client:
        refused = await client.post(
            "/v1/auth/sign-in", json={"email": user.email, "password": PASSWORD}
        )
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == "account_disabled"
        assert "set-cookie" not in refused.headers
        # The wrong password learns nothing about the account.
        wrong = await client.post(
            "/v1/auth/sign-in", json={"email": user.email, "password": "not the password"}
        )
        assert wrong.json()["code"] == "invalid_credentials"

        listed = await admin("--json", "users", "list")
        (mine,) = [i for i in json.loads(listed.stdout)["items"] if i["id"] == user.id]
        assert mine["disabled_at"] is not None

        enabled = await admin("users", "enable", user.email)
        assert enabled.code == 0, enabled
        signed_in = await client.post(
            "/v1/auth/sign-in", json={"email": user.email, "password": PASSWORD}
        )
        assert signed_in.status_code == 200
    # What was revoked stays revoked.
    assert (await gateway.get("/v1/me", headers=user.bearer)).status_code == 401
    fresh = {"cookie": f"mf_session={signed_in.cookies['mf_session']}"}
    assert (await gateway.get("/v1/me", headers=fresh)).status_code == 200
