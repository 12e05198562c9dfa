"""A task's URL to the bytes to store: resolve it to a plan, select formats by the
options, fetch them, and mux them through ffmpeg when they are more than one file as is.
One fMP4 stream asked for as it is (its init section and segments) is stored as it is
(:mod:`.concat`), and goes on at its next segment in another attempt.

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
from mediaflow_worker.media.concat import SegmentedBody, concatenable, fingerprint
from mediaflow_worker.media.fetcher import Fetcher
from mediaflow_worker.media.metrics import MEDIA_FAILURES, MEDIA_TASKS, UNRESOLVED
from mediaflow_worker.media.plan import Format, Info, Options, Plan
from mediaflow_worker.media.segments import Piece, PieceFetch, fetch_pieces
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
    # A direct file, or one segmented stream, stored as it is.
    body: ResumableBody | SegmentedBody | None = None
    duration: float | None = None  # a playlist's, when no mux reports it
    content_type: str | None = None  # what the stored file is, when its bytes do not say

    @property
    def continued(self) -> bool:
        """Whether the bytes start where another attempt's stored parts end."""
        return self.body is not None and self.body.continued

    async def describe(self, content_type: str) -> Described:
        """The file name and API.md's ``media`` of the stored result."""
        probed = await mux.probe(bytes(self.head))
        known = self.plan.info
        reported = self.report.duration if self.report else None
        duration = reported or self.duration or probed.duration
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


def _segmented(found: Format) -> bool:
    protocol = found.get("protocol") or "https"
    return protocol in ("m3u8", "m3u8_native") or protocol.startswith("http_dash_segments")


def _format_headers(found: Format, plan_headers: dict[str, str]) -> dict[str, str]:
    return {**plan_headers, **(found.get("http_headers") or {})}


@dataclass(frozen=True)
class Stream:
    """A segmented format's pieces in order, and its duration when its playlist says."""

    url: str
    pieces: list[Piece]
    duration: float | None


async def _stream_pieces(
    fetcher: Fetcher, found: Format, config: MediaConfig, headers: dict[str, str]
) -> Stream:
    """The pieces of a segmented format: its media playlist's (fetched), or its fragments."""
    if (found.get("protocol") or "https") in ("m3u8", "m3u8_native"):
        fetched = await fetcher.read(
            found["url"], config.manifest_max_bytes, headers=headers, what="A playlist"
        )
        playlist = hls.media_segments(fetched.body.decode("utf-8", "replace"), fetched.url)
        return Stream(fetched.url, playlist.pieces, playlist.duration or None)
    fragments = found.get("fragments") or []
    durations = [f.get("duration") for f in fragments]
    known = [float(d) for d in durations if d]
    # An init fragment has no duration; every other one must have one for the sum to hold.
    duration = sum(known) if len(known) >= len(fragments) - 1 and known else None
    return Stream(found.get("url") or "", dash.fragment_pieces(found), duration)


def _piece_fetch(
    fetcher: Fetcher, headers: dict[str, str], config: MediaConfig, kind: str
) -> PieceFetch:
    return PieceFetch(
        fetcher,
        headers,
        config.segment_parallelism,
        config.segment_retries,
        config.segment_max_bytes,
        kind,
    )


async def _format_stream(
    fetcher: Fetcher,
    found: Format,
    config: MediaConfig,
    kind: str,
    plan_headers: dict[str, str],
    segments: Segments,
    known: Stream | None = None,
) -> AsyncIterator[bytes]:
    """The bytes of one format: a file streamed as it comes, or its pieces in order
    (``known``: already listed)."""
    headers = _format_headers(found, plan_headers)
    if not _segmented(found):
        async with fetcher.open(found["url"], headers=headers) as source:
            async for chunk in source.chunks:
                yield chunk
        return
    stream = known or await _stream_pieces(fetcher, found, config, headers)
    segments.known += len(stream.pieces)
    fetch = _piece_fetch(fetcher, headers, config, kind)
    async for body in fetch_pieces(fetch, stream.pieces, segments.handed_on):
        yield body


async def _source_stream(source: Source) -> AsyncIterator[bytes]:
    async for chunk in source.chunks:
        yield chunk


def _inputs(
    fetcher: Fetcher,
    plan: Plan,
    selection: Selection,
    config: MediaConfig,
    segments: Segments,
    listed: Stream | None = None,
) -> tuple[list[AsyncIterator[bytes]], int | None, int | None]:
    """ffmpeg's inputs, and which of them holds the video and the audio (``listed``: the
    pieces of the one format, already known)."""
    inputs: list[AsyncIterator[bytes]] = []
    video_input = audio_input = None

    def stream(found: Format) -> AsyncIterator[bytes]:
        if plan.source is not None:
            return _source_stream(plan.source)
        return _format_stream(
            fetcher, found, config, plan.source_kind, plan.headers, segments, listed
        )

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


def _single_stream(plan: Plan, selection: Selection, output: mux.Output) -> Format | None:
    """The one segmented format that may be stored as it is: nothing to mux, no stream to
    leave out, no re-encoding, and an MP4 to make (what its segments are is known only
    once its playlist is read: :func:`.concat.concatenable`)."""
    if plan.source is not None or output.format_args[:2] != ["-f", "mp4"]:
        return None
    if selection.drop_audio or selection.drop_video:
        return None
    if (selection.video is None) == (selection.audio is None):
        return None
    found = selection.video or selection.audio
    return found if found is not None and _segmented(found) else None


async def _as_is(
    fetcher: Fetcher,
    plan: Plan,
    found: Format,
    listed: Stream,
    config: MediaConfig,
    options: Options,
    continuation: Continuation | None,
) -> Media:
    """One fMP4 stream's pieces, concatenated: from the segment where another attempt's
    stored parts end when it recorded this very list of pieces."""
    pieces = listed.pieces
    fetch = _piece_fetch(fetcher, _format_headers(found, plan.headers), config, plan.source_kind)
    start = None
    if (
        continuation is not None
        and continuation.next_segment is not None
        and continuation.validator == fingerprint(pieces)
        and continuation.next_segment[0] <= len(pieces)
    ):
        start = continuation.next_segment
    segments = Segments(known=len(pieces), done=start[0] if start else 0)
    body = SegmentedBody(
        fetch,
        pieces,
        listed.url,
        segments.handed_on,
        start,
        continuation.offset if start and continuation else 0,
    )
    media = Media(
        body.chunks(),
        None,
        plan,
        segments=segments,
        body=body,
        duration=listed.duration,
        # Audio alone is audio/mp4, as ffmpeg's M4A brand says of the muxed file.
        content_type="audio/mp4" if options.mode == "audio" else None,
    )
    if start is not None and start != (0, 0):
        # What the stored file is, is probed from its start: the init section at least.
        async for init in fetch_pieces(fetch, pieces[:1]):
            media.head += init[:PROBE_BYTES]
    return media


def _muxed(
    fetcher: Fetcher,
    plan: Plan,
    selection: Selection,
    config: MediaConfig,
    options: Options,
    listed: Stream | None,
) -> Media:
    segments = Segments()
    inputs, video_input, audio_input = _inputs(fetcher, plan, selection, config, segments, listed)
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
    return media


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
            # Only the container it would make matters here, not the maps.
            container = mux.output_for(
                options,
                video_input=None,
                audio_input=None,
                codecs=_codecs(selection.video, selection.audio),
            )
            single = _single_stream(plan, selection, container)
            listed: Stream | None = None
            if single is not None:
                try:
                    listed = await _stream_pieces(
                        fetcher, single, config, _format_headers(single, plan.headers)
                    )
                except TaskFailure as exc:
                    MEDIA_FAILURES.labels(plan.source_kind, exc.code).inc()
                    raise
            if single is not None and listed is not None and concatenable(listed.pieces):
                media = await _as_is(fetcher, plan, single, listed, config, options, continuation)
            else:
                media = _muxed(fetcher, plan, selection, config, options, listed)
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
