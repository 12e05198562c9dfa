"""Opening sources over real HTTP on 127.0.0.1 (allowed explicitly, as in ``make run``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from devstack import stack
from mediaflow_worker.egress import EgressPolicy
from mediaflow_worker.errors import Retry, TaskFailure
from mediaflow_worker.fetch import FetchLimits, open_http, open_source

Origin = Any  # conftest.Origin
LOOPBACK = EgressPolicy.parse("127.0.0.1/32")


def limits(**overrides: Any) -> FetchLimits:
    values: dict[str, Any] = {
        "egress": LOOPBACK,
        "max_bytes": 1024 * 1024,
        "max_redirects": 3,
        "connect_timeout": 2,
        "read_timeout": 2,
        "total_timeout": 10,
    } | overrides
    return FetchLimits(**values)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with open_http(LOOPBACK) as session:
        yield session


async def read_all(session: aiohttp.ClientSession, url: str, fetch: FetchLimits) -> bytes:
    async with open_source(session, url, fetch) as source:
        return b"".join([chunk async for chunk in source.chunks])


async def failure_code(session: aiohttp.ClientSession, url: str, fetch: FetchLimits) -> str:
    with pytest.raises(TaskFailure) as caught:
        await read_all(session, url, fetch)
    return caught.value.code


async def test_a_source_is_read_with_its_size(http: aiohttp.ClientSession, origin: Origin) -> None:
    body = b"x" * 700_000
    async with open_source(http, origin.file(body), limits()) as source:
        assert source.size == len(body)
        assert b"".join([chunk async for chunk in source.chunks]) == body


async def test_redirects_are_followed(http: aiohttp.ClientSession, origin: Origin) -> None:
    target = origin.file(b"media")
    assert await read_all(http, origin.redirect(origin.redirect(target)), limits()) == b"media"


@pytest.mark.parametrize("status", [404, 403, 500, 204])
async def test_a_non_success_status_is_a_source_http_error(
    http: aiohttp.ClientSession, origin: Origin, status: int
) -> None:
    expected = "source_http_error" if status >= 300 else None
    if expected is None:
        assert await read_all(http, origin.status(status), limits()) == b""
    else:
        assert await failure_code(http, origin.status(status), limits()) == expected


async def test_too_many_redirects_is_a_source_http_error(
    http: aiohttp.ClientSession, origin: Origin
) -> None:
    url = origin.file(b"media")
    for _ in range(4):
        url = origin.redirect(url)
    assert await failure_code(http, url, limits(max_redirects=3)) == "source_http_error"


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://2130706433/",
        "http://0x7f.1/",
        "file:///etc/passwd",
    ],
)
async def test_every_redirect_hop_is_checked(
    http: aiohttp.ClientSession, origin: Origin, location: str
) -> None:
    assert await failure_code(http, origin.redirect(location), limits()) == "blocked_destination"


async def test_loopback_is_refused_unless_allowed(origin: Origin) -> None:
    url = origin.file(b"media")
    public_only = limits(egress=EgressPolicy())
    async with open_http(EgressPolicy()) as closed:
        assert await failure_code(closed, url, public_only) == "blocked_destination"
        named = url.replace("127.0.0.1", "localhost")
        assert await failure_code(closed, named, public_only) == "blocked_destination"
    async with open_http(LOOPBACK) as opened:
        named = url.replace("127.0.0.1", "localhost")
        assert await read_all(opened, named, limits()) == b"media"


async def test_a_declared_size_over_the_limit_is_refused_before_reading(
    http: aiohttp.ClientSession, origin: Origin
) -> None:
    url = origin.file(b"x" * 2000)
    assert await failure_code(http, url, limits(max_bytes=1000)) == "too_large"


async def test_a_silent_source_times_out(http: aiohttp.ClientSession, origin: Origin) -> None:
    async def stalls(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "100"})
        await response.prepare(request)
        await response.write(b"x" * 10)
        await asyncio.sleep(5)
        return response

    assert (
        await failure_code(http, origin.add(stalls), limits(read_timeout=0.3)) == "source_timeout"
    )


async def test_a_slow_trickle_hits_the_total_time_limit(
    http: aiohttp.ClientSession, origin: Origin
) -> None:
    async def trickles(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        for _ in range(100):
            await response.write(b"x" * 10)
            await asyncio.sleep(0.05)
        return response

    fetch = limits(read_timeout=1, total_timeout=0.5)
    assert await failure_code(http, origin.add(trickles), fetch) == "source_timeout"


async def test_a_refused_connection_is_unreachable(http: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{stack.free_port()}/video.mp4"
    assert await failure_code(http, url, limits()) == "source_unreachable"


async def test_a_body_cut_short_is_unreachable(http: aiohttp.ClientSession, origin: Origin) -> None:
    async def cuts_off(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "100000"})
        await response.prepare(request)
        await response.write(b"x" * 1000)
        assert request.transport is not None
        request.transport.close()
        return response

    assert await failure_code(http, origin.add(cuts_off), limits()) == "source_unreachable"


async def failure(session: aiohttp.ClientSession, url: str, fetch: FetchLimits) -> TaskFailure:
    with pytest.raises(TaskFailure) as caught:
        await read_all(session, url, fetch)
    return caught.value


@pytest.mark.parametrize(
    ("status", "retry_after", "delay"),
    [
        (503, "7", 7.0),
        (429, "120", 120.0),
        (500, None, None),
        (502, "soon", None),
        (408, None, None),
    ],
)
async def test_overloaded_sources_are_transient_with_their_retry_after(
    http: aiohttp.ClientSession,
    origin: Origin,
    status: int,
    retry_after: str | None,
    delay: float | None,
) -> None:
    async def busy(_: web.Request) -> web.StreamResponse:
        headers = {"Retry-After": retry_after} if retry_after else {}
        return web.Response(status=status, headers=headers)

    caught = await failure(http, origin.add(busy), limits())
    assert isinstance(caught, Retry)
    assert caught.code == "source_http_error"
    assert caught.delay == delay


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 451, 501])
async def test_refusals_are_permanent(
    http: aiohttp.ClientSession, origin: Origin, status: int
) -> None:
    caught = await failure(http, origin.status(status), limits())
    assert not isinstance(caught, Retry)
    assert caught.code == "source_http_error"


async def test_network_trouble_is_transient(http: aiohttp.ClientSession, origin: Origin) -> None:
    refused = await failure(http, f"http://127.0.0.1:{stack.free_port()}/v.mp4", limits())
    assert isinstance(refused, Retry)
    assert refused.code == "source_unreachable"

    async def stalls(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response()

    timed_out = await failure(http, origin.add(stalls), limits(read_timeout=0.2))
    assert isinstance(timed_out, Retry)
    assert timed_out.code == "source_timeout"


async def test_a_source_below_the_minimum_rate_times_out(
    http: aiohttp.ClientSession, origin: Origin
) -> None:
    async def trickles(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "10000"})
        await response.prepare(request)
        try:
            for _ in range(100):
                await response.write(b"x" * 100)  # 100 bytes every 20 ms: 5 kB/s
                await asyncio.sleep(0.02)
        except ConnectionResetError:
            pass
        return response

    fetch = limits(min_rate=20_000, min_rate_window=0.3)
    caught = await failure(http, origin.add(trickles), fetch)
    assert isinstance(caught, Retry)
    assert caught.code == "source_timeout"
    # The same source is fine for a worker that accepts its pace.
    assert len(await read_all(http, origin.add(trickles), limits(min_rate=1000))) == 10_000
