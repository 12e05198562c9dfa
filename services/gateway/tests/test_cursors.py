"""List cursors: whatever a client makes of one is 422 ``invalid_cursor`` (never a 500), and
the cursors the gateway issues page through every task exactly once, on any replica."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import serving
from mediaflow_gateway.app import create_app
from mediaflow_gateway.cursors import cursor_key, seal
from mediaflow_gateway.settings import GatewaySettings

PASSWORD = "correct horse battery staple"
TASKS = 7


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass(frozen=True)
class Lister:
    """A user with ``TASKS`` tasks, and two gateway replicas sharing one SERVICE_SECRET."""

    user_id: str
    cookie: dict[str, str]
    task_ids: list[str]  # newest first, as the list orders them
    replicas: tuple[httpx.AsyncClient, httpx.AsyncClient]
    key: bytes  # the replicas' cursor key, for cursors that are signed yet not issued

    def signed(self, payload: bytes) -> str:
        """A correctly signed cursor around any payload: what only a leaked key could make."""
        return seal(self.key, self.user_id, payload)


@pytest.fixture(scope="module")
async def lister(infra, auth_url: str) -> AsyncIterator[Lister]:  # type: ignore[no-untyped-def]
    settings_ = GatewaySettings(**infra.settings_kwargs(auth_internal_url=auth_url))
    async with (
        httpx.AsyncClient(base_url=auth_url) as auth,
        serving(create_app(settings_)) as first_url,
        serving(create_app(settings_)) as second_url,
        httpx.AsyncClient(base_url=first_url) as first,
        httpx.AsyncClient(base_url=second_url) as second,
    ):
        email = f"cursor-{secrets.token_hex(6)}@example.com"
        signed_up = await auth.post("/v1/auth/sign-up", json={"email": email, "password": PASSWORD})
        assert signed_up.status_code == 201, signed_up.text
        cookie = {"cookie": f"mf_session={signed_up.cookies['mf_session']}"}
        created = []
        for i in range(TASKS):
            response = await first.post(
                "/v1/tasks", json={"url": f"https://media.example/{i}.mp4"}, headers=cookie
            )
            assert response.status_code == 202, response.text
            created.append(response.json()["task"]["id"])
        yield Lister(
            user_id=signed_up.json()["user"]["id"],
            cookie=cookie,
            task_ids=list(reversed(created)),
            replicas=(first, second),
            key=cursor_key(settings_.service_secret.get_secret_value()),
        )


async def _assert_invalid(lister: Lister, cursor: str) -> None:
    response = await lister.replicas[0].get(
        "/v1/tasks", params={"cursor": cursor}, headers=lister.cookie
    )
    assert response.status_code == 422, f"{cursor!r}: {response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "invalid_cursor", response.text


# Timestamps Python reads but that PostgreSQL's timestamptz (or UTC) cannot hold, or that no
# issued cursor spells: naive, past year 1 or 9999 once in UTC.
NOT_ISSUED_TIMES = [
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00",
    "2020-01-01T00:00:00",
    "2020-01-01T00:00:00+01:00",
    "2020-01-01 00:00:00+00:00",
]
ODD_TIMES = [
    *NOT_ISSUED_TIMES,
    "9999-12-31T23:59:59.999999+00:00",
    "2020-01-01T00:00:00+00:00",
    "infinity",
    "-infinity",
    "2020-13-01T00:00:00+00:00",
]
# Values in the task id's place: numbers, nulls, lists, strings that are not UUIDs.
ODD_IDS: list[Any] = [5, None, [], {}, "", "not-a-uuid", 1.5, True, str(uuid.uuid4()).upper()]
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
_fields = st.lists(
    st.sampled_from(ODD_TIMES) | st.sampled_from(ODD_IDS) | _json, min_size=0, max_size=3
) | st.tuples(st.sampled_from(ODD_TIMES), st.sampled_from(ODD_IDS)).map(list)
_payloads = _fields.map(lambda value: json.dumps(value).encode()) | st.binary(max_size=80)
_unsigned = st.one_of(
    # Any text at all.
    st.text(min_size=1, max_size=300),
    # base64 of anything, the shape the gateway issued before cursors were signed (an empty
    # cursor is no cursor: the first page).
    _payloads.map(_b64).filter(bool),
    # The signed shape with a tag that is not the gateway's.
    st.tuples(_payloads, st.binary(min_size=16, max_size=16)).map(
        lambda parts: f"{_b64(parts[0])}.{_b64(parts[1])}"
    ),
)
_FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_FUZZ
@given(cursor=_unsigned)
async def test_a_cursor_the_gateway_did_not_issue_is_invalid_cursor(
    lister: Lister, cursor: str
) -> None:
    await _assert_invalid(lister, cursor)


@_FUZZ
@given(payload=_payloads)
async def test_a_signed_cursor_is_still_checked_field_by_field(
    lister: Lister, payload: bytes
) -> None:
    await _assert_invalid(lister, lister.signed(payload))


@pytest.mark.parametrize("created_at", ODD_TIMES)
@pytest.mark.parametrize("task_id", [5, "not-a-uuid", None])
async def test_the_cursors_that_were_500_are_invalid_cursor(
    lister: Lister, created_at: str, task_id: Any
) -> None:
    raw = json.dumps([created_at, task_id]).encode()
    await _assert_invalid(lister, _b64(raw))
    await _assert_invalid(lister, lister.signed(raw))


async def test_out_of_range_timestamps_are_invalid_even_when_signed(lister: Lister) -> None:
    task_id = lister.task_ids[0]
    for created_at in NOT_ISSUED_TIMES:
        await _assert_invalid(lister, lister.signed(json.dumps([created_at, task_id]).encode()))


@pytest.mark.parametrize("limit", [1, 2, 3, TASKS])
async def test_issued_cursors_walk_every_task_once_across_replicas(
    lister: Lister, limit: int
) -> None:
    seen: list[str] = []
    cursor = None
    for page_number in range(TASKS + 1):
        # Each page from the other replica than the last: an issued cursor works on any.
        client = lister.replicas[page_number % 2]
        params = {"limit": str(limit)} | ({"cursor": cursor} if cursor else {})
        page = await client.get("/v1/tasks", params=params, headers=lister.cookie)
        assert page.status_code == 200, page.text
        seen += [item["id"] for item in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == lister.task_ids


async def test_a_cursor_is_the_users_it_was_issued_to(lister: Lister, auth_url: str) -> None:
    page = await lister.replicas[0].get("/v1/tasks", params={"limit": "1"}, headers=lister.cookie)
    cursor = page.json()["next_cursor"]
    assert cursor
    async with httpx.AsyncClient(base_url=auth_url) as auth:
        other = await auth.post(
            "/v1/auth/sign-up",
            json={"email": f"other-{secrets.token_hex(6)}@example.com", "password": PASSWORD},
        )
    response = await lister.replicas[1].get(
        "/v1/tasks",
        params={"cursor": cursor},
        headers={"cookie": f"mf_session={other.cookies['mf_session']}"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_cursor"
