"""A task's URL to the bytes to store: resolve it to a plan, select formats by the
options, fetch them, and mux them through ffmpeg when they are more than one file as is.

The resolvers, in order: the URL is fetched; media is a direct file, an HLS playlist or
DASH manifest is a manifest; a page goes to the extractor of a platform that knows its
address (yt-dlp), else to the page resolvers (``og:video``, ``<video>``, JSON-LD), whose
answer is fetched the same way, and a page they know nothing of goes to yt-dlp's generic
extractor (player embeds).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from yarl import URL

from mediaflow_libs import naming
from mediaflow_worker.errors import TaskFailure
from mediaflow_worker.fetch import Source
from mediaflow_worker.journal import Continuation
from mediaflow_worker.media import dash, hls, mux
from mediaflow_worker.media.fetcher import Fetcher
from mediaflow_worker.media.metrics import MEDIA_FAILURES, MEDIA_TASKS, UNRESOLVED
from mediaflow_worker.media.plan import Format, Info, Options, Plan
from mediaflow_worker.media.segments import PieceFetch, fetch_pieces
from mediaflow_worker.media.select import Selection, select
from mediaflow_worker.resolve import Page, Resolvers, _is_page, _page_text, _prepend, _read_head
from mediaflow_worker.resume import Restarted, ResumableBody, validator

PROBE_BYTES = 1024 * 1024  # of the stored file's start, for ffprobe


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


@dataclass(frozen=True)
class Described:
    """What a stored file is: the name it is saved as, and API.md's ``media``."""

    filename: str
    media: dict[str, Any]


@dataclass
class Segments:
    """The pieces of a task's streams known so far (each stream's as its playlist or
    manifest is read) and those handed on to the mux: the task's progress when the size
    of the file to store cannot be known before it is made."""

    known: int = 0
    done: int = 0

    async def handed_on(self) -> None:
        self.done += 1

    def percent(self) -> int | None:
        """Pieces handed on over pieces known; None when the source has no pieces."""
        return self.done * 100 // self.known if self.known else None


@dataclass
class Media:
    """The bytes to store (``size`` when known in advance) and, once they are stored,
    what they are."""

    chunks: AsyncIterator[bytes]
    size: int | None
    plan: Plan
    report: mux.MuxReport | None = None
    head: bytearray = field(default_factory=bytearray)
    segments: Segments = field(default_factory=Segments)
    body: ResumableBody | None = None  # a direct file stored as it is

    @property
    def continued(self) -> bool:
        """Whether the bytes start where another attempt's stored parts end."""
        return self.body is not None and self.body.skip_to is not None

    async def describe(self, content_type: str) -> Described:
        """The file name and API.md's ``media`` of the stored result."""
        probed = await mux.probe(bytes(self.head))
        known = self.plan.info
        duration = (self.report.duration if self.report else None) or probed.duration
        info = Info(
            title=known.title,
            duration=duration or known.duration,
            width=probed.width or known.width,
            height=probed.height or known.height,
            video_codec=probed.video_codec or known.video_codec,
            audio_codec=probed.audio_codec or known.audio_codec,
        )
        return Described(
            naming.filename(known.title, self.plan.url, content_type),
            {
                "title": info.title,
                "duration_seconds": round(info.duration, 3) if info.duration else None,
                "width": info.width,
                "height": info.height,
                "video_codec": info.video_codec,
                "audio_codec": info.audio_codec,
            },
        )


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


def _codecs(*formats: Format | None) -> tuple[str | None, ...]:
    return tuple(f.get(key) for f in formats if f for key in ("vcodec", "acodec"))


async def _format_stream(
    fetcher: Fetcher,
    found: Format,
    config: MediaConfig,
    kind: str,
    plan_headers: dict[str, str],
    segments: Segments,
) -> AsyncIterator[bytes]:
    """The bytes of one format: a file streamed as it comes, or its pieces in order."""
    protocol = found.get("protocol") or "https"
    headers = {**plan_headers, **(found.get("http_headers") or {})}
    if protocol in ("m3u8", "m3u8_native"):
        fetched = await fetcher.read(
            found["url"], config.manifest_max_bytes, headers=headers, what="A playlist"
        )
        pieces = hls.media_segments(fetched.body.decode("utf-8", "replace"), fetched.url).pieces
    elif protocol.startswith("http_dash_segments"):
        pieces = dash.fragment_pieces(found)
    else:
        async with fetcher.open(found["url"], headers=headers) as source:
            async for chunk in source.chunks:
                yield chunk
        return
    fetch = PieceFetch(
        fetcher,
        headers,
        config.segment_parallelism,
        config.segment_retries,
        config.segment_max_bytes,
        kind,
    )
    segments.known += len(pieces)
    async for body in fetch_pieces(fetch, pieces, segments.handed_on):
        yield body


async def _source_stream(source: Source) -> AsyncIterator[bytes]:
    async for chunk in source.chunks:
        yield chunk


def _inputs(
    fetcher: Fetcher, plan: Plan, selection: Selection, config: MediaConfig, segments: Segments
) -> tuple[list[AsyncIterator[bytes]], int | None, int | None]:
    """ffmpeg's inputs, and which of them holds the video and the audio."""
    inputs: list[AsyncIterator[bytes]] = []
    video_input = audio_input = None

    def stream(found: Format) -> AsyncIterator[bytes]:
        if plan.source is not None:
            return _source_stream(plan.source)
        return _format_stream(fetcher, found, config, plan.source_kind, plan.headers, segments)

    if selection.video is not None:
        inputs.append(stream(selection.video))
        if not selection.drop_video:
            video_input = 0
        if not selection.drop_audio and selection.audio is None:
            audio_input = 0
    if selection.audio is not None:
        inputs.append(stream(selection.audio))
        audio_input = len(inputs) - 1
    return inputs, video_input, audio_input


async def _tee(chunks: AsyncIterator[bytes], head: bytearray) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        if isinstance(chunk, Restarted):
            head.clear()  # the head probed is the new version's
        if len(head) < PROBE_BYTES:
            head += chunk[: PROBE_BYTES - len(head)]
        yield chunk


@asynccontextmanager
async def open_task_media(
    fetcher: Fetcher,
    url: str,
    options: Options,
    resolvers: Resolvers,
    config: MediaConfig,
    on_plan: Callable[[Plan], None] | None = None,
    continuation: Continuation | None = None,
) -> AsyncIterator[Media]:
    """The media of ``url`` as ``options`` want it, for the block to store."""
    # A direct file stored as it is can start over within the attempt; one fed to ffmpeg
    # cannot (ffmpeg cannot be told to forget what it read).
    restartable = options.mode == "auto"
    async with AsyncExitStack() as stack:
        try:
            plan = await stack.enter_async_context(
                open_plan(
                    fetcher,
                    url,
                    resolvers,
                    config,
                    restartable=restartable,
                    continuation=continuation,
                )
            )
        except TaskFailure as exc:
            MEDIA_FAILURES.labels(UNRESOLVED, exc.code).inc()
            raise
        MEDIA_TASKS.labels(plan.source_kind).inc()
        if on_plan is not None:
            on_plan(plan)
        media: Media
        if plan.kind == "direct" and options.mode == "auto":
            assert plan.source is not None
            media = Media(plan.source.chunks, plan.source.size, plan, body=plan.body)
        else:
            formats = plan.formats or [{"url": plan.url, "protocol": "https"}]
            if plan.kind == "direct":
                formats = [{"url": plan.url, "protocol": "https", "vcodec": None, "acodec": None}]
            try:
                selection = select(formats, options)
            except TaskFailure as exc:
                MEDIA_FAILURES.labels(plan.source_kind, exc.code).inc()
                raise
            segments = Segments()
            inputs, video_input, audio_input = _inputs(fetcher, plan, selection, config, segments)
            output = mux.output_for(
                options,
                video_input=video_input,
                audio_input=audio_input,
                codecs=_codecs(selection.video, selection.audio),
            )
            report = mux.MuxReport()
            media = Media(mux.mux(inputs, output, report, kind=plan.source_kind), None, plan)
            media.report = report
            media.segments = segments
        chunks = media.chunks
        media.chunks = _tee(chunks, media.head)
        try:
            yield media
        except TaskFailure as exc:
            MEDIA_FAILURES.labels(plan.source_kind, exc.code).inc()
            raise
        finally:
            # The store may stop reading early: ffmpeg is stopped and responses closed now.
            for stream in (media.chunks, chunks):
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
