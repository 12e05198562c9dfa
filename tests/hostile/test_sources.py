"""Sources that attack the worker: slow drips, sizes past MAX_MEDIA_BYTES, non-media served as
video. Each task fails with its documented code, refunded once, nothing stored (the hostile
stack runs FETCH_READ_TIMEOUT_SECONDS=1, a 4 KiB/s minimum rate over 1 s, MAX_MEDIA_BYTES=2 MiB
and two attempts, so every case ends within seconds)."""

from __future__ import annotations

import pytest

from tests.hostile.sources import MAX_MEDIA_BYTES, NOT_MEDIA, Origin
from tests.hostile.support import User, World, sign_up


@pytest.fixture(scope="module")
async def source_user(hostile: World) -> User:
    return await sign_up(hostile.url, "sources")


@pytest.mark.parametrize("path", ["/stall", "/trickle"])
async def test_a_slow_drip_source_fails_source_timeout(
    hostile: World, hostile_origin: Origin, source_user: User, path: str
) -> None:
    await hostile.submit_and_fail(
        source_user, f"{hostile_origin.url}{path}", "source_timeout", within=20
    )


@pytest.mark.parametrize(
    "declared",
    [MAX_MEDIA_BYTES + 1, 5 * 1024**3, 2**63 - 1],
    ids=["limit-plus-one", "5GiB", "int64-max"],
)
async def test_a_declared_size_past_the_limit_fails_too_large(
    hostile: World, hostile_origin: Origin, source_user: User, declared: int
) -> None:
    await hostile.submit_and_fail(
        source_user, f"{hostile_origin.url}/declares/{declared}", "too_large"
    )


async def test_an_undeclared_size_past_the_limit_fails_too_large(
    hostile: World, hostile_origin: Origin, source_user: User
) -> None:
    url = f"{hostile_origin.url}/chunked/{MAX_MEDIA_BYTES + 512 * 1024}"
    await hostile.submit_and_fail(source_user, url, "too_large")


async def test_a_source_at_the_limit_is_stored(
    hostile: World, hostile_origin: Origin, source_user: User
) -> None:
    """The control for the size cases: exactly MAX_MEDIA_BYTES, without a declared length."""
    async with hostile.client() as client:
        response = await client.post(
            "/v1/tasks",
            json={"url": f"{hostile_origin.url}/chunked/{MAX_MEDIA_BYTES}"},
            headers=source_user.bearer,
        )
    assert response.status_code == 202, response.text
    task = await hostile.wait_terminal(source_user, response.json()["task"]["id"])
    assert task["status"] == "succeeded", task
    assert task["result"]["size"] == MAX_MEDIA_BYTES


@pytest.mark.parametrize("name", list(NOT_MEDIA))
async def test_non_media_served_as_video_fails_not_media(
    hostile: World, hostile_origin: Origin, source_user: User, name: str
) -> None:
    await hostile.submit_and_fail(
        source_user, f"{hostile_origin.url}/not-media/{name}", "not_media"
    )


async def test_a_page_naming_no_media_fails_not_media(
    hostile: World, hostile_origin: Origin, source_user: User
) -> None:
    # A page whose only "media" is another page that names itself: no media anywhere.
    url = hostile_origin.page(hostile_origin.page(f"{hostile_origin.url}/not-media/html"))
    await hostile.submit_and_fail(source_user, url, "not_media")
