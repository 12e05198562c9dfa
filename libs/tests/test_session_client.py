"""The session check's own logic (auth answered by an in-memory transport; the real auth is
exercised by the gateway, notifier and end-to-end tests)."""

from __future__ import annotations

import asyncio

import httpx

from mediaflow_libs.contracts import CredentialRevoked
from mediaflow_libs.sessions import SessionClient, credential_digest

VALID = {
    "user": {"id": "u-1", "email": "a@example.com", "name": None, "created_at": "2026-01-01"},
    "session": {"id": "s-1", "expires_at": None},
}


def _client(answer_after: asyncio.Event | None = None) -> tuple[SessionClient, list[str]]:
    asked: list[str] = []

    async def auth(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if answer_after is not None:
            await answer_after.wait()
        else:
            await asyncio.sleep(0.02)
        return httpx.Response(200, json=VALID)

    client = SessionClient(
        auth_url="http://auth.test",
        service_name="gateway",
        service_secret="s" * 32,
        timeout_seconds=1.0,
        breaker_failures=5,
        breaker_reset_seconds=2.0,
        cache_seconds=5.0,
    )
    transport = httpx.MockTransport(auth)
    client._http = httpx.AsyncClient(base_url="http://auth.test", transport=transport)
    return client, asked


async def test_requests_of_one_session_arriving_together_ask_auth_once() -> None:
    client, asked = _client()
    identities = await asyncio.gather(*(client.verify("token-a") for _ in range(16)))
    assert len(asked) == 1
    assert {identity.user_id for identity in identities} == {"u-1"}
    await client.verify("token-b")  # another credential asks on its own
    assert len(asked) == 2
    await client.aclose()


async def test_an_answer_that_predates_a_revocation_is_not_kept() -> None:
    answer = asyncio.Event()
    client, asked = _client(answer_after=answer)
    checking = asyncio.create_task(client.verify("token-a"))
    while not asked:
        await asyncio.sleep(0)
    client.forget(CredentialRevoked(credential_sha256=credential_digest("token-a")))
    answer.set()
    await checking
    # Not cached: the next request asks auth again (which now says what it says).
    await client.verify("token-a")
    assert len(asked) == 2
    await client.aclose()
