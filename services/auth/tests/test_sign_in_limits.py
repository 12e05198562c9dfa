"""Failed sign-ins are throttled per (account, client address) first: a guesser at one address
is stopped there, the owner elsewhere still signs in, and only failures from many addresses
reach the account's own, higher, limit. auth runs under uvicorn as it is served, taking the
client address from X-Forwarded-For of its trusted proxy (this test's client, on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from conftest import serving
from mediaflow_auth.app import create_app
from mediaflow_auth.settings import AuthSettings
from mediaflow_libs.serving import forwarded_allow_ips
from services.auth.tests.support import PASSWORD, new_email, problem_code

PER_PAIR = 3
PER_ACCOUNT = 9
WRONG = "not the password at all"


@pytest.fixture
async def auth(infra) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    settings = AuthSettings(
        **infra.settings_kwargs(),
        trusted_proxies="127.0.0.1",
        sign_in_max_failures_per_account_and_ip=PER_PAIR,
        sign_in_max_failures_per_account=PER_ACCOUNT,
    )
    async with (
        serving(
            create_app(settings),
            proxy_headers=True,
            forwarded_allow_ips=forwarded_allow_ips(settings),
        ) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        yield client


async def _account(client: httpx.AsyncClient) -> str:
    email = new_email()
    response = await client.post("/v1/auth/sign-up", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return email


async def _sign_in(
    client: httpx.AsyncClient, email: str, password: str, address: str
) -> httpx.Response:
    # What the ingress sends: the address it saw the client connect from.
    return await client.post(
        "/v1/auth/sign-in",
        json={"email": email, "password": password},
        headers={"x-forwarded-for": address},
    )


def _throttled(response: httpx.Response) -> bool:
    if response.status_code != 429:
        return False
    assert problem_code(response) == "rate_limited"
    assert 0 < int(response.headers["retry-after"]) <= 900
    assert "set-cookie" not in response.headers
    return True


async def test_an_attacker_at_one_address_cannot_lock_the_owner_out(
    auth: httpx.AsyncClient,
) -> None:
    email = await _account(auth)
    attacker, owner = "203.0.113.66", "198.51.100.7"
    for _ in range(PER_PAIR):
        wrong = await _sign_in(auth, email, WRONG, attacker)
        assert wrong.status_code == 401 and problem_code(wrong) == "invalid_credentials"
    # Past the account's own limit too: a throttled address's attempts are not counted.
    for _ in range(PER_ACCOUNT + 2):
        assert _throttled(await _sign_in(auth, email, WRONG, attacker))
    assert _throttled(await _sign_in(auth, email, PASSWORD, attacker))

    signed_in = await _sign_in(auth, email, PASSWORD, owner)
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.cookies.get("mf_session")
    # The attacker's pair stays throttled after the owner signed in.
    assert _throttled(await _sign_in(auth, email, WRONG, attacker))
    # The owner's own mistakes count on the owner's pair, and a success forgets them.
    for _ in range(PER_PAIR - 1):
        assert (await _sign_in(auth, email, WRONG, owner)).status_code == 401
    assert (await _sign_in(auth, email, PASSWORD, owner)).status_code == 200
    for _ in range(PER_PAIR - 1):
        assert (await _sign_in(auth, email, WRONG, owner)).status_code == 401
    assert (await _sign_in(auth, email, PASSWORD, owner)).status_code == 200


async def test_a_guesser_spread_over_many_addresses_is_stopped_by_the_account_limit(
    auth: httpx.AsyncClient,
) -> None:
    email = await _account(auth)
    addresses = iter(f"192.0.2.{n}" for n in range(1, 255))
    failures = 0
    while failures < PER_ACCOUNT:
        address = next(addresses)
        for _ in range(min(2, PER_ACCOUNT - failures)):  # under the per-pair limit
            wrong = await _sign_in(auth, email, WRONG, address)
            assert wrong.status_code == 401, wrong.text
            failures += 1
    # Every further guess is refused, from any address, fresh ones included.
    for _ in range(3):
        assert _throttled(await _sign_in(auth, email, WRONG, next(addresses)))
    # The price of stopping it: the account is closed to everyone until the window ends.
    assert _throttled(await _sign_in(auth, email, PASSWORD, next(addresses)))


async def test_other_accounts_at_the_throttled_address_are_not_affected(
    auth: httpx.AsyncClient,
) -> None:
    attacked, other = await _account(auth), await _account(auth)
    shared = "203.0.113.80"  # e.g. one office behind one address
    for _ in range(PER_PAIR):
        await _sign_in(auth, attacked, WRONG, shared)
    assert _throttled(await _sign_in(auth, attacked, WRONG, shared))
    assert (await _sign_in(auth, other, PASSWORD, shared)).status_code == 200


def test_the_account_limit_must_exceed_the_per_address_one(infra) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="SIGN_IN_MAX_FAILURES_PER_ACCOUNT must exceed"):
        AuthSettings(
            **infra.settings_kwargs(),
            sign_in_max_failures_per_account_and_ip=10,
            sign_in_max_failures_per_account=10,
        )


async def test_sign_ins_naming_no_account_count_only_for_their_address(
    auth: httpx.AsyncClient,
) -> None:
    """An email that is not text names no account: however many such attempts anyone sends,
    another one from another address is refused as a bad credential, not throttled."""
    for _ in range(PER_ACCOUNT + 1):
        response = await auth.post(
            "/v1/auth/sign-in",
            json={"email": {"$ne": None}, "password": WRONG},
            headers={"x-forwarded-for": "203.0.113.7"},
        )
        assert response.status_code == 401, response.text
    response = await auth.post(
        "/v1/auth/sign-in",
        json={"email": ["x"], "password": WRONG},
        headers={"x-forwarded-for": "203.0.113.8"},
    )
    assert (response.status_code, problem_code(response)) == (401, "invalid_credentials")
