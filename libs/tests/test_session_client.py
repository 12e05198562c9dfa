"""The session check's own logic and its circuit breaker (auth answered by an in-memory
transport, the breaker on an injected clock; the real auth is exercised by the gateway,
notifier, end-to-end and hostile tests)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from devstack import stack
from mediaflow_libs.circuit_breaker import CircuitBreaker
from mediaflow_libs.contracts import CredentialRevoked
from mediaflow_libs.credentials import MAX_CREDENTIAL_LENGTH, credential_digest
from mediaflow_libs.problems import ProblemError
from mediaflow_libs.session_client import SessionClient

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


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _open_breaker(clock: _Clock, threshold: int = 3) -> CircuitBreaker:
    breaker = CircuitBreaker(threshold, reset_seconds=2.0, clock=clock)
    for _ in range(threshold):
        assert breaker.allow()
        breaker.record_fault()
    return breaker


def test_the_breaker_opens_after_threshold_consecutive_faults_only() -> None:
    clock = _Clock()
    breaker = CircuitBreaker(3, reset_seconds=2.0, clock=clock)
    for _ in range(2):
        breaker.record_fault()
    breaker.record_success()  # an answer in between: the count starts again
    for _ in range(2):
        breaker.record_fault()
        assert breaker.allow() and not breaker.is_open
    breaker.record_fault()
    assert breaker.is_open


def test_an_open_breaker_refuses_every_call_until_the_cool_down_has_passed() -> None:
    clock = _Clock()
    breaker = _open_breaker(clock)
    for _ in range(10):
        assert not breaker.allow()
    clock.now += 1.99
    assert not breaker.allow()


def test_after_the_cool_down_one_trial_goes_through_and_its_success_closes() -> None:
    clock = _Clock()
    breaker = _open_breaker(clock)
    clock.now += 2.0
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # others wait for its outcome
    assert not breaker.allow()
    breaker.record_success()
    assert not breaker.is_open
    assert all(breaker.allow() for _ in range(10))


def test_a_failed_trial_opens_the_breaker_for_another_cool_down() -> None:
    clock = _Clock()
    breaker = _open_breaker(clock)
    clock.now += 2.5
    assert breaker.allow()
    breaker.record_fault()
    assert breaker.is_open
    clock.now += 1.99
    assert not breaker.allow()
    clock.now += 0.01
    assert breaker.allow()  # the next trial


def test_a_trial_that_never_reports_is_replaced_after_a_cool_down() -> None:
    clock = _Clock()
    breaker = _open_breaker(clock)
    clock.now += 2.0
    assert breaker.allow()
    clock.now += 1.0
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()


def _answering(status: int, body: object = None) -> tuple[SessionClient, list[str]]:
    """A client whose auth answers every verify with ``status`` (and ``body``)."""
    asked: list[str] = []

    async def auth(request: httpx.Request) -> httpx.Response:
        asked.append(json.loads(request.content)["credential"])
        if status == 200:
            return httpx.Response(200, json=VALID)
        return httpx.Response(status, json=body if body is not None else {"code": "whatever"})

    client = SessionClient(
        auth_url="http://auth.test",
        service_name="gateway",
        service_secret="s" * 32,
        timeout_seconds=1.0,
        breaker_failures=BREAKER_FAILURES,
        breaker_reset_seconds=60.0,
        cache_seconds=0.0,
    )
    client._http = httpx.AsyncClient(
        base_url="http://auth.test", transport=httpx.MockTransport(auth)
    )
    return client, asked


BREAKER_FAILURES = 3


async def _refusal(client: SessionClient, credential: str) -> tuple[int, str]:
    with pytest.raises(ProblemError) as refused:
        await client.verify(credential)
    return refused.value.status_code, refused.value.code


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (401, {"code": "session_invalid"}, "session_invalid"),
        (401, {"code": "session_expired"}, "session_expired"),
        (401, {"code": "session_revoked"}, "session_revoked"),
        (413, {"code": "payload_too_large"}, "session_invalid"),
        (422, {"code": "whatever"}, "session_invalid"),
        (404, {"code": "not_found"}, "session_invalid"),
        (400, {"code": "invalid_json"}, "session_invalid"),
    ],
)
async def test_an_answer_about_the_credential_is_a_401_and_never_opens_the_breaker(
    status: int, body: object, code: str
) -> None:
    client, asked = _answering(status, body)
    for n in range(BREAKER_FAILURES * 10):
        assert await _refusal(client, f"token{n}") == (401, code)
    assert len(asked) == BREAKER_FAILURES * 10  # every one reached auth: never refused
    assert not client._breaker.is_open
    await client.aclose()


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_faults_of_auth_open_the_breaker(status: int) -> None:
    client, asked = _answering(status)
    for n in range(BREAKER_FAILURES):
        assert await _refusal(client, f"token{n}") == (503, "auth_unavailable")
    assert await _refusal(client, "token-next") == (503, "auth_unavailable")
    assert len(asked) == BREAKER_FAILURES  # the last one did not reach auth
    await client.aclose()


async def test_auth_unreachable_opens_the_breaker() -> None:
    client = SessionClient(
        auth_url=f"http://127.0.0.1:{stack.free_port()}",  # nobody listens there
        service_name="gateway",
        service_secret="s" * 32,
        timeout_seconds=1.0,
        breaker_failures=BREAKER_FAILURES,
        breaker_reset_seconds=60.0,
    )
    for n in range(BREAKER_FAILURES):
        assert await _refusal(client, f"token{n}") == (503, "auth_unavailable")
    assert client._breaker.is_open
    await client.aclose()


async def test_our_service_token_refused_is_503_not_401() -> None:
    client, _ = _answering(403, {"code": "service_unauthorized"})
    assert await _refusal(client, "token") == (503, "auth_unavailable")
    await client.aclose()


@pytest.mark.parametrize(
    "credential",
    [
        "a" * 4100,
        "a" * 5 * 1024,
        "a" * (MAX_CREDENTIAL_LENGTH + 1),
        "\xff" * 2100,  # a header's bytes as the server decodes them (latin-1)
        "tok en",
        "tok\x00en",
        '"' * 50,
        "eyJhbGciOiJub25lIn0.e30.",
        "é",
    ],
    ids=["4100", "5KiB", "just-too-long", "latin-1", "space", "nul", "quotes", "jwt", "e-acute"],
)
async def test_junk_is_session_invalid_without_asking_auth(credential: str) -> None:
    client, asked = _answering(503)  # were auth asked, this would be a 503
    for _ in range(BREAKER_FAILURES * 3):
        assert await _refusal(client, credential) == (401, "session_invalid")
    assert asked == []
    assert not client._breaker.is_open
    await client.aclose()


async def test_a_credential_of_any_shape_auth_issues_is_asked_about() -> None:
    client, asked = _answering(200)
    for credential in (
        "A" * 43,
        "mfk_" + "b" * 43,
        "x",
        "a" * MAX_CREDENTIAL_LENGTH,
        "0123456789-_",
    ):
        await client.verify(credential)
    assert len(asked) == 5
    await client.aclose()
