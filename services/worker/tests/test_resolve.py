"""Pages that name their media, resolved to it: the parser alone, then over HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from mediaflow_worker.egress import EgressPolicy
from mediaflow_worker.errors import TaskFailure
from mediaflow_worker.fetch import FetchLimits, open_http
from mediaflow_worker.resolve import HtmlMediaResolver, Page, Resolvers, open_media

Origin = Any  # conftest.Origin
PAGE_URL = URL("https://media.example/watch/42")
LOOPBACK = EgressPolicy.parse("127.0.0.1/32")
LIMITS = FetchLimits(LOOPBACK, 1024 * 1024, 3, 2, 2, 10)
IMAGE_OBJECT = {"@type": "ImageObject", "contentUrl": "x.jpg"}


def html(head: str = "", body: str = "") -> str:
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>"


def video_object(url: str) -> str:
    document = {
        "@context": "https://schema.org",
        "@graph": [
            {"@type": "WebPage", "name": "x"},
            {"@type": ["VideoObject", "CreativeWork"], "contentUrl": url},
        ],
    }
    return f'<script type="application/ld+json">{json.dumps(document)}</script>'


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        (
            html('<meta property="og:video" content="https://cdn.example/a.mp4">'),
            "https://cdn.example/a.mp4",
        ),
        (
            html(
                '<meta property="og:video" content="http://cdn.example/a.mp4">'
                '<meta property="og:video:secure_url" content="https://cdn.example/s.mp4">'
            ),
            "https://cdn.example/s.mp4",
        ),
        (html('<meta property="og:video:url" content="/v/b.webm">'), "/v/b.webm"),
        (html(video_object("https://cdn.example/ld.mp4")), "https://cdn.example/ld.mp4"),
        (html(body='<video controls src="clip.mp4"></video>'), "clip.mp4"),
        (
            html(body='<video><source src="one.webm"><source src="two.mp4"></video>'),
            "one.webm",
        ),
        (html(body='<audio><source src="song.mp3"></audio>'), "song.mp3"),
        (
            html('<base href="https://static.example/media/">', '<video src="c.mp4">'),
            "https://static.example/media/c.mp4",
        ),
        # og:video wins over the player's own element; a broken JSON-LD block is skipped.
        (
            html(
                '<script type="application/ld+json">{broken</script>'
                '<meta property="og:video" content="https://cdn.example/og.mp4">',
                '<video src="el.mp4">',
            ),
            "https://cdn.example/og.mp4",
        ),
    ],
)
async def test_the_html_resolver_finds_what_a_page_names(page: str, expected: str) -> None:
    assert await HtmlMediaResolver().resolve(Page(PAGE_URL, page)) == expected


@pytest.mark.parametrize(
    "page",
    [
        html(body="<p>just words</p>"),
        html(body='<img src="poster.jpg"><source src="not-in-a-video.mp4">'),
        html(f"<script type='application/ld+json'>{json.dumps(IMAGE_OBJECT)}</script>"),
    ],
)
async def test_a_page_without_media_resolves_to_nothing(page: str) -> None:
    assert await HtmlMediaResolver().resolve(Page(PAGE_URL, page)) is None


class SiteResolver:
    """A site-specific resolver, as one would be added: it knows one host's URL scheme."""

    name = "example-site"

    async def resolve(self, page: Page) -> str | None:
        if page.url.host != "media.example":
            return None
        return f"https://cdn.media.example/{page.url.name}.mp4"


async def test_resolvers_are_asked_in_order_site_specific_first_and_links_made_absolute() -> None:
    resolvers = Resolvers()
    page = Page(PAGE_URL, html(body='<video src="generic.mp4">'))
    assert await resolvers.resolve(page) == URL("https://media.example/watch/generic.mp4")
    resolvers.register(SiteResolver())
    assert await resolvers.resolve(page) == URL("https://cdn.media.example/42.mp4")
    other = Page(URL("https://elsewhere.example/p"), html(body='<video src="/v.mp4">'))
    assert await resolvers.resolve(other) == URL("https://elsewhere.example/v.mp4")


# --- over HTTP ----------------------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with open_http(LOOPBACK) as session:
        yield session


async def read_media(
    session: aiohttp.ClientSession, url: str, max_pages: int = 2
) -> tuple[str, bytes]:
    async with open_media(
        session, url, LIMITS, Resolvers(), max_pages=max_pages, max_page_bytes=64 * 1024
    ) as source:
        return str(source.url), b"".join([chunk async for chunk in source.chunks])


async def test_a_page_is_followed_to_its_media(
    http: aiohttp.ClientSession, origin: Origin, make_mp4: Any
) -> None:
    media = make_mp4(300_000)
    target = origin.file(media, content_type="video/mp4")
    page = origin.file(
        html(f'<meta property="og:video:secure_url" content="{target}">').encode(),
        content_type="text/html",
    )
    assert await read_media(http, page) == (target, media)


async def test_a_relative_video_element_through_a_redirect_and_an_embed_page(
    http: aiohttp.ClientSession, origin: Origin, make_mp4: Any
) -> None:
    media = make_mp4(100_000)
    target = origin.file(media)
    embed = origin.file(html(body=f'<video><source src="{URL(target).path}"></video>').encode())
    page = origin.file(html(f'<meta property="og:video" content="{embed}">').encode())
    assert await read_media(http, origin.redirect(page)) == (target, media)
    # One page fewer allowed: the embed page is one too many.
    with pytest.raises(TaskFailure) as caught:
        await read_media(http, page, max_pages=1)
    assert caught.value.code == "not_media"


async def test_media_served_as_html_is_still_media(
    http: aiohttp.ClientSession, origin: Origin, make_mp4: Any
) -> None:
    media = make_mp4(50_000)
    url = origin.file(media, content_type="text/html")
    assert await read_media(http, url) == (url, media)


async def test_a_page_naming_no_media_is_not_media(
    http: aiohttp.ClientSession, origin: Origin
) -> None:
    # The server calls it video; the bytes say page.
    url = origin.file(html(body="<p>nothing here</p>").encode(), content_type="video/mp4")
    with pytest.raises(TaskFailure) as caught:
        await read_media(http, url)
    assert caught.value.code == "not_media"


async def test_media_a_page_names_on_a_refused_address_is_never_fetched(
    http: aiohttp.ClientSession, origin: Origin
) -> None:
    connections = 0

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    listener = await asyncio.start_server(count, "127.0.0.2", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        for named in (f"http://127.0.0.2:{port}/v.mp4", f"http://[::ffff:127.0.0.2]:{port}/v.mp4"):
            page = origin.file(html(f'<meta property="og:video" content="{named}">').encode())
            with pytest.raises(TaskFailure) as caught:
                await read_media(http, page)
            assert caught.value.code == "blocked_destination"
    finally:
        listener.close()
        await listener.wait_closed()
    assert connections == 0


async def test_only_the_top_of_a_huge_page_is_read(
    http: aiohttp.ClientSession, origin: Origin, make_mp4: Any
) -> None:
    target = origin.file(make_mp4(1000))

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        await response.prepare(request)
        await response.write(html(f'<meta property="og:video" content="{target}">').encode())
        try:
            for _ in range(10_000):
                await response.write(b"<p>" + b"x" * 4096 + b"</p>")
        except ConnectionResetError:
            pass
        return response

    url, _ = await read_media(http, origin.add(endless))
    assert url == target
