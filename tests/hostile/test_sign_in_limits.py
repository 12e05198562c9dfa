"""Nobody can lock an owner out: failed sign-ins are throttled per (account, client address)
first, through nginx as users reach it, with the default limits. Each client connects from an
address of its own on 127.0.0.0/8, which nginx passes on as X-Forwarded-For: the address auth
counts is the one the ingress saw."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from mediaflow_auth.settings import AuthSettings
from tests.hostile.support import PASSWORD, World, assert_problem, sign_up

DEFAULTS = AuthSettings.model_fields
PER_PAIR: int = DEFAULTS["sign_in_max_failures_per_account_and_ip"].default
PER_ACCOUNT: int = DEFAULTS["sign_in_max_failures_per_account"].default
WRONG = "not the password at all"


@asynccontextmanager
async def _from(world: World, address: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=world.url, transport=transport, timeout=15) as client:
        yield client


async def _sign_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/v1/auth/sign-in", json={"email": email, "password": password})


def _assert_throttled(response: httpx.Response) -> None:
    assert_problem(response, 429, "rate_limited")
    assert 0 < int(response.headers["retry-after"]) <= 900
    assert "set-cookie" not in response.headers


async def test_an_attacker_at_one_address_cannot_lock_the_owner_out(world: World) -> None:
    owner = await sign_up(world.url, "limits")
    async with _from(world, "127.0.0.66") as attacker, _from(world, "127.0.0.67") as own:
        for _ in range(PER_PAIR):
            wrong = await _sign_in(attacker, owner.email, WRONG)
            assert_problem(wrong, 401, "invalid_credentials")
        _assert_throttled(await _sign_in(attacker, owner.email, WRONG))
        # Even the right password, from the throttled address.
        _assert_throttled(await _sign_in(attacker, owner.email, PASSWORD))
        signed_in = await _sign_in(own, owner.email, PASSWORD)
        assert signed_in.status_code == 200, signed_in.text
        assert signed_in.cookies.get("mf_session")
        me = await own.get(
            "/v1/me", headers={"Cookie": f"mf_session={signed_in.cookies['mf_session']}"}
        )
        assert me.status_code == 200, me.text
        _assert_throttled(await _sign_in(attacker, owner.email, WRONG))


async def test_a_guesser_spread_over_many_addresses_is_stopped(world: World) -> None:
    victim = await sign_up(world.url, "limits")
    per_address = PER_PAIR  # each address as far as it may go
    spread = [f"127.0.1.{n}" for n in range(1, PER_ACCOUNT // per_address + 1)]
    assert len(spread) * per_address == PER_ACCOUNT

    async def guess_from(address: str) -> list[int]:
        async with _from(world, address) as client:
            return [
                (await _sign_in(client, victim.email, WRONG)).status_code
                for _ in range(per_address)
            ]

    statuses = await asyncio.gather(*(guess_from(address) for address in spread))
    assert all(status == 401 for batch in statuses for status in batch), statuses
    async with _from(world, "127.0.1.200") as fresh:
        _assert_throttled(await _sign_in(fresh, victim.email, WRONG))
