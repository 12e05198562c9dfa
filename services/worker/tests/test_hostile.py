"""Hostile URLs: every spelling of an address the worker must not reach is refused, and
listeners on those addresses see no connection at all (no network needed: the targets
are this machine's loopback addresses, which an empty allow-list must not open)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

import pytest
from aiohttp import web

from devstack import stack
from mediaflow_worker.egress import EgressPolicy
from mediaflow_worker.errors import TaskFailure
from mediaflow_worker.fetch import FetchLimits, open_http
from mediaflow_worker.resolve import Resolvers, open_media


@dataclass
class Listeners:
    """TCP listeners on one port of several loopback addresses, counting connections."""

    port: int
    connections: list[str] = field(default_factory=list)


@pytest.fixture
async def listeners() -> AsyncIterator[Listeners]:
    hosts = ("127.0.0.1", "127.0.0.2", "::1")
    found = Listeners(port=stack.free_port())  # free on 127.0.0.1, and so far on the others

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        found.connections.append(str(writer.get_extra_info("sockname")))
        writer.close()

    servers = [await asyncio.start_server(record, host, found.port) for host in hosts]
    try:
        yield found
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


def hostile_urls(port: int) -> list[str]:
    p = port
    return [
        f"http://127.0.0.1:{p}/v.mp4",
        f"http://127.0.0.2:{p}/v.mp4",
        f"http://127.1:{p}/v.mp4",  # short form
        f"http://127.0.1:{p}/v.mp4",
        f"http://2130706433:{p}/v.mp4",  # decimal
        f"http://2130706434:{p}/v.mp4",  # 127.0.0.2, decimal
        f"http://0x7f000001:{p}/v.mp4",  # hex
        f"http://0x7F.0x0.0x0.0x1:{p}/v.mp4",  # dotted hex
        f"http://0x7f.1:{p}/v.mp4",
        f"http://017700000001:{p}/v.mp4",  # octal
        f"http://0177.0.0.01:{p}/v.mp4",  # dotted octal
        f"http://0177.0.0.02:{p}/v.mp4",
        f"http://0:{p}/v.mp4",  # 0.0.0.0, which Linux connects to the local host
        f"http://0.0.0.0:{p}/v.mp4",
        f"http://[::]:{p}/v.mp4",
        f"http://[::1]:{p}/v.mp4",  # IPv6 loopback
        f"http://[0:0:0:0:0:0:0:1]:{p}/v.mp4",
        f"http://[::ffff:127.0.0.1]:{p}/v.mp4",  # IPv4-mapped
        f"http://[::ffff:7f00:1]:{p}/v.mp4",  # IPv4-mapped, hex
        f"http://[0:0:0:0:0:ffff:127.0.0.2]:{p}/v.mp4",
        f"http://[::127.0.0.1]:{p}/v.mp4",  # IPv4-compatible
        f"http://[64:ff9b::7f00:1]:{p}/v.mp4",  # NAT64
        f"http://[2002:7f00:1::]:{p}/v.mp4",  # 6to4
        f"http://[::ffff:0:127.0.0.1]:{p}/v.mp4",  # SIIT IPv4-translated
        f"http://[::ffff:0:7f00:1]:{p}/v.mp4",
        f"http://[64:ff9b:1::7f00:1]:{p}/v.mp4",  # local-use NAT64
        f"http://localhost:{p}/v.mp4",  # names resolving to loopback
        f"http://LOCALHOST:{p}/v.mp4",
        f"http://vm:{p}/v.mp4",  # /etc/hosts names on this machine
        f"http://runsc:{p}/v.mp4",
        f"http://{socket.gethostname()}:{p}/v.mp4",
        f"http://user:pass@127.0.0.1:{p}/v.mp4",
        f"https://127.0.0.1:{p}/v.mp4",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
        "http://2852039166/latest/meta-data/",  # 169.254.169.254, decimal
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://10.0.0.1/v.mp4",
        "http://172.16.0.1/v.mp4",
        "http://192.168.0.1/v.mp4",
        "http://100.64.0.1/v.mp4",
        "http://[fe80::1]/v.mp4",
        "http://[fc00::1]/v.mp4",
        "http://[fec0::1]/v.mp4",  # site-local (deprecated)
        "http://[::ffff:0:10.0.0.1]/v.mp4",
        "http://[::ffff:0:a00:1]/v.mp4",
        "http://224.0.0.1/v.mp4",
        "http://255.255.255.255/v.mp4",
        "file:///etc/passwd",
        "ftp://127.0.0.1/v.mp4",
        "gopher://127.0.0.1:70/_",
    ]


def limits(allow: str = "") -> FetchLimits:
    return FetchLimits(EgressPolicy.parse(allow), 1024 * 1024, 5, 1, 1, 5)


async def fetch(url: str, allow: str) -> None:
    """What the worker does with a source: resolve it and read it to the end."""
    async with (
        open_http(EgressPolicy.parse(allow)) as session,
        open_media(
            session, url, limits(allow), Resolvers(), max_pages=2, max_page_bytes=65536
        ) as source,
    ):
        async for _ in source.chunks:
            pass


async def refusal(url: str, allow: str = "") -> str:
    with pytest.raises(TaskFailure) as caught:
        await fetch(url, allow)
    return caught.value.code


async def test_hostile_urls_are_refused_and_reach_no_listener(listeners: Listeners) -> None:
    urls = hostile_urls(listeners.port)
    assert len(urls) >= 30
    codes = {url: await refusal(url) for url in urls}
    assert {url: code for url, code in codes.items() if code != "blocked_destination"} == {}
    assert listeners.connections == []


@pytest.fixture
async def redirector() -> AsyncIterator[str]:
    """An HTTP server on 127.0.0.3 (the only address the redirect tests allow) that
    redirects ``/?to=<url>`` there, or names it in a page (``/page?to=<url>``)."""

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(request.query["to"])

    async def page(request: web.Request) -> web.StreamResponse:
        body = f'<html><head><meta property="og:video" content="{request.query["to"]}">'
        return web.Response(text=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", redirect)
    app.router.add_get("/page", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.3", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.3:{port}"
    finally:
        await runner.cleanup()


async def test_redirects_and_pages_to_hostile_urls_are_refused_at_that_hop(
    listeners: Listeners, redirector: str
) -> None:
    targets = hostile_urls(listeners.port)
    for target in targets:
        for via in ("/", "/page"):
            url = f"{redirector}{via}?{urlencode({'to': target})}"
            assert await refusal(url, allow="127.0.0.3/32") == "blocked_destination", url
    assert listeners.connections == []


async def test_the_listeners_do_count_connections(listeners: Listeners) -> None:
    """The guard above would pass vacuously if the listeners could not be reached at all."""
    for host in ("127.0.0.1", "127.0.0.2", "::1"):
        reader, writer = await asyncio.open_connection(host, listeners.port)
        await reader.read()
        writer.close()
    assert len(listeners.connections) == 3
    # Allowed explicitly, the same fetch does connect (and fails on the silent listener).
    assert await refusal(f"http://127.0.0.2:{listeners.port}/v.mp4", "127.0.0.2/32") in (
        "source_unreachable",
        "source_timeout",
    )
    assert len(listeners.connections) > 3
