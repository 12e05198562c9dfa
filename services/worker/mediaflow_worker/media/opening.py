"""A task's URL to its plan: the resolvers, in order. The URL is fetched; media is a direct
file, an HLS playlist or DASH manifest is a manifest; a page goes to the extractor of a
platform that knows its address (yt-dlp), else to the page resolvers (``og:video``,
``<video>``, JSON-LD), whose answer is fetched the same way, and a page they know nothing
of goes to yt-dlp's generic extractor (player embeds)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from yarl import URL

from mediaflow_worker.errors import TaskFailure
from mediaflow_worker.fetch import Source
from mediaflow_worker.journal import Continuation
from mediaflow_worker.media import dash, hls
from mediaflow_worker.media.fetcher import Fetcher
from mediaflow_worker.media.plan import PROBE_BYTES, Plan
from mediaflow_worker.metrics import BYTES_REFETCHED
from mediaflow_worker.resolve import Page, Resolvers, _is_page, _page_text, _prepend, _read_head
from mediaflow_worker.resume import ResumableBody, validator


@dataclass(frozen=True)
class MediaConfig:
    max_pages: int
    max_page_bytes: int
    manifest_max_bytes: int
    segment_parallelism: int
    segment_retries: int
    segment_max_bytes: int
    extractors: bool
    extractor_max_bytes: int
    extractor_timeout: float
    max_resumes: int = 3  # of a direct file's body within an attempt


async def _read_up_to(head: bytes, chunks: AsyncIterator[bytes], size: int) -> bytes:
    """``head`` and what follows it in ``chunks``, ``size`` bytes at most."""
    start = bytearray(head[:size])
    if len(start) < size:
        async for chunk in chunks:
            start += chunk[: size - len(start)]
            if len(start) >= size:
                break
    return bytes(start)


async def _read_all(head: bytes, chunks: AsyncIterator[bytes], max_bytes: int) -> str:
    body = bytearray(head)
    async for chunk in chunks:
        body += chunk
        if len(body) > max_bytes:
            raise TaskFailure("too_large", f"The manifest is larger than {max_bytes} bytes.")
    return body.decode("utf-8", errors="replace")


async def _platform(fetcher: Fetcher, urls: list[str], config: MediaConfig) -> Plan | None:
    """What the extractor of a platform that knows one of ``urls`` finds there, or None.
    yt-dlp is loaded only here: a link that is media already never needs it."""
    if not config.extractors:
        return None
    from mediaflow_worker.media import extractor

    for url in dict.fromkeys(urls):
        if key := extractor.specific_extractor(url):
            return await extractor.extract(
                fetcher,
                url,
                key,
                max_bytes=config.extractor_max_bytes,
                socket_timeout=fetcher.limits.read_timeout,
            )
    return None


@asynccontextmanager
async def open_plan(
    fetcher: Fetcher,
    url: str,
    resolvers: Resolvers,
    config: MediaConfig,
    *,
    restartable: bool = False,
    continuation: Continuation | None = None,
) -> AsyncIterator[Plan]:
    """The plan for ``url``; a direct file's response stays open for the block.

    The URL is fetched first: media and manifests are what they are. A page is first
    offered to the extractor of a platform that knows its address (as is a first link
    that refuses us: platforms answer bots as they please, yt-dlp knows how to ask), then to
    the page resolvers, then to yt-dlp's generic extractor."""
    target, kind = URL(url), "file"
    for _ in range(config.max_pages + 1):
        plan: Plan | None = None
        try:
            async with fetcher.open(str(target)) as source:
                head = await _read_head(source.chunks)
                if hls.is_playlist(head) or dash.is_mpd(head, source.content_type):
                    text = await _read_all(head, source.chunks, config.manifest_max_bytes)
                    at = str(source.url)
                    if hls.is_playlist(head):
                        plan = Plan("manifest", at, "hls", hls.master_formats(fetcher, text, at))
                    else:
                        plan = Plan("manifest", at, "dash", dash.mpd_formats(fetcher, text, at))
                elif not _is_page(source, head):
                    # Another attempt's parts go on only for the very file they hold.
                    go_on = (
                        continuation is not None
                        and restartable
                        and validator(source) == continuation.validator
                        and source.size == continuation.size
                    )
                    start = b""
                    if go_on:
                        # Stored by another attempt, but what the file is, is probed from
                        # its first bytes: read them again from this answer.
                        start = await _read_up_to(head, source.chunks, PROBE_BYTES)
                        BYTES_REFETCHED.inc(len(start))
                    body = ResumableBody(
                        fetcher.session,
                        fetcher.limits,
                        str(source.url),
                        source,
                        len(head),
                        config.max_resumes,
                        restartable,
                        skip_to=continuation.offset if go_on and continuation else None,
                    )
                    yield Plan(
                        "direct",
                        str(source.url),
                        kind,
                        source=Source(
                            url=source.url,
                            content_type=source.content_type,
                            size=source.size,
                            chunks=body.chunks() if go_on else _prepend(head, body.chunks()),
                        ),
                        body=body,
                        start=start,
                    )
                    return
                else:
                    text = await _page_text(head, source.chunks, config.max_page_bytes)
                    page = Page(source.url, text)
        except TaskFailure as refused:
            if refused.code != "source_http_error" or kind != "file":
                raise
            plan = await _platform(fetcher, [str(target)], config)
            if plan is None:
                raise
        if plan is None:
            plan = await _platform(fetcher, [str(target), str(page.url)], config)
        if plan is not None:
            yield plan
            return
        found = await resolvers.resolve(page)
        if found is None:
            if config.extractors:
                yield await _generic(fetcher, str(page.url), config)
                return
            raise TaskFailure("not_media", "The source is a web page that names no media.")
        target, kind = found, "page"
    raise TaskFailure("not_media", f"The source leads through more than {config.max_pages} pages.")


async def _generic(fetcher: Fetcher, url: str, config: MediaConfig) -> Plan:
    """yt-dlp's generic extractor: the player embeds it knows on pages of any site."""
    from mediaflow_worker.media import extractor

    try:
        plan = await extractor.extract(
            fetcher,
            url,
            "Generic",
            max_bytes=config.extractor_max_bytes,
            socket_timeout=fetcher.limits.read_timeout,
        )
    except TaskFailure as exc:
        if exc.code == "blocked_destination":
            raise
        raise TaskFailure("not_media", "The source is a web page that names no media.") from exc
    return replace(plan, source_kind="page")
