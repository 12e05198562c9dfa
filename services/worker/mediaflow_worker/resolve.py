"""From the URL a user gave to the media it names.

A URL that answers with media is the media. One that answers with an HTML page is handed
to the resolvers, in order, until one names the media's URL; that URL is fetched like the
first (every hop checked by the egress rules again), up to ``max_pages`` pages deep.

Resolvers are pluggable: anything with a ``name`` and an async ``resolve(page)`` that
returns a URL or None. :class:`HtmlMediaResolver`, which reads what pages say about their
own media (``og:video``, ``<video>``/``<source>``, JSON-LD ``VideoObject``), comes last;
site-specific resolvers are registered in front of it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, Protocol
from urllib.parse import urljoin

import aiohttp
from yarl import URL

from mediaflow_worker.errors import TaskFailure
from mediaflow_worker.fetch import FetchLimits, Source, open_source, parse_url
from mediaflow_worker.sniff import SNIFF_BYTES, sniff_media_type

_PAGE_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<meta", b"<!--")


@dataclass(frozen=True)
class Page:
    url: URL  # after redirects: what relative links are relative to
    html: str


class Resolver(Protocol):
    name: str

    async def resolve(self, page: Page) -> str | None:
        """The URL of the media ``page`` stands for (absolute, or relative to the page), or
        None when this resolver does not know the page."""
        ...


class Resolvers:
    """The resolvers a worker asks, in order."""

    def __init__(self, resolvers: list[Resolver] | None = None) -> None:
        self._resolvers: list[Resolver] = (
            list(resolvers) if resolvers is not None else [HtmlMediaResolver()]
        )

    def register(self, resolver: Resolver) -> None:
        """Ask ``resolver`` before those already registered (site-specific before generic)."""
        self._resolvers.insert(0, resolver)

    async def resolve(self, page: Page) -> URL | None:
        for resolver in self._resolvers:
            found = await resolver.resolve(page)
            if found:
                return parse_url(found.strip(), page.url)
        return None


class HtmlMediaResolver:
    """What a page says about its own media, in this order of trust: ``og:video:secure_url``,
    ``og:video:url``/``og:video``, JSON-LD ``VideoObject.contentUrl``, then the first
    ``<video src>`` or ``<source src>``."""

    name = "html"

    async def resolve(self, page: Page) -> str | None:
        parser = _MediaLinks()
        parser.feed(page.html)
        parser.close()
        for found in (
            parser.meta.get("og:video:secure_url"),
            parser.meta.get("og:video:url"),
            parser.meta.get("og:video"),
            next(_json_ld_content_urls(parser.json_ld), None),
            parser.elements[0] if parser.elements else None,
        ):
            if found:
                # The caller joins what is still relative with the page's own URL.
                return _joined(parser.base, found)
        return None


def _joined(base: str | None, link: str) -> str:
    if not base:
        return link
    try:
        return urljoin(base, link)
    except ValueError:  # a <base href> that is no URL: the link stands on its own
        return link


class _MediaLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.elements: list[str] = []
        self.json_ld: list[str] = []
        self.base: str | None = None  # <base href>: what relative links are relative to
        self._in_json_ld = False
        self._media_depth = 0  # inside <video>/<audio>, whose <source> children count

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "base" and values.get("href") and self.base is None:
            self.base = values["href"]
        elif tag == "meta":
            key = (values.get("property") or values.get("name") or "").lower()
            if key.startswith("og:video") and values.get("content"):
                self.meta.setdefault(key, values["content"])
        elif tag in ("video", "audio"):
            self._media_depth += 1
            if values.get("src"):
                self.elements.append(values["src"])
        elif tag == "source" and self._media_depth and values.get("src"):
            self.elements.append(values["src"])
        elif tag == "script" and values.get("type", "").lower() == "application/ld+json":
            self._in_json_ld = True
            self.json_ld.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("video", "audio") and self._media_depth:
            self._media_depth -= 1
        elif tag == "script":
            self._in_json_ld = False

    def handle_data(self, data: str) -> None:
        if self._in_json_ld:
            self.json_ld[-1] += data


def _json_ld_content_urls(blocks: list[str]) -> Iterator[str]:
    for block in blocks:
        try:
            document = json.loads(block)
        except ValueError:
            continue  # a broken block on someone's page is not our failure
        yield from _video_objects(document)


def _video_objects(node: Any) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from _video_objects(item)
    elif isinstance(node, dict):
        kind = node.get("@type")
        kinds = kind if isinstance(kind, list) else [kind]
        url = node.get("contentUrl")
        if "VideoObject" in kinds and isinstance(url, str) and url:
            yield url
        for value in node.values():
            if isinstance(value, list | dict):
                yield from _video_objects(value)


def _is_page(source: Source, head: bytes) -> bool:
    if sniff_media_type(head) is not None:
        return False  # media bytes win over whatever the server calls them
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return source.content_type in _PAGE_TYPES or start.startswith(_HTML_STARTS)


async def _read_head(chunks: AsyncIterator[bytes]) -> bytes:
    head = b""
    async for chunk in chunks:
        head += chunk
        if len(head) >= SNIFF_BYTES:
            break
    return head


async def _prepend(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if head:
        yield head
    async for chunk in rest:
        yield chunk


async def _page_text(head: bytes, rest: AsyncIterator[bytes], max_bytes: int) -> str:
    body = bytearray(head)
    async for chunk in rest:
        body += chunk
        if len(body) >= max_bytes:
            break  # what a page says about its media sits near its top
    return body[:max_bytes].decode("utf-8", errors="replace")


@asynccontextmanager
async def open_media(
    session: aiohttp.ClientSession,
    url: str,
    limits: FetchLimits,
    resolvers: Resolvers,
    *,
    max_pages: int,
    max_page_bytes: int,
) -> AsyncIterator[Source]:
    """Open the media ``url`` stands for: the source itself, or what its page names."""
    target = parse_url(url)
    for _ in range(max_pages + 1):
        async with open_source(session, str(target), limits) as source:
            head = await _read_head(source.chunks)
            if not _is_page(source, head):
                yield Source(
                    url=source.url,
                    content_type=source.content_type,
                    size=source.size,
                    chunks=_prepend(head, source.chunks),
                )
                return
            page = Page(source.url, await _page_text(head, source.chunks, max_page_bytes))
        found = await resolvers.resolve(page)
        if found is None:
            raise TaskFailure("not_media", "The source is a web page that names no media.")
        target = found
    raise TaskFailure("not_media", f"The source leads through more than {max_pages} pages.")
