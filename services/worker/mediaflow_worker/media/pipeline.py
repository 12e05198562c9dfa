"""A task's URL to the bytes to store: resolve it to a plan, select formats by the
options, fetch them, and mux them through ffmpeg when they are more than one file as is.
One fMP4 stream asked for as it is (its init section and segments) is stored as it is
(:mod:`.concat`), and goes on at its next segment in another attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from mediaflow_libs import naming
from mediaflow_worker.errors import TaskFailure
from mediaflow_worker.journal import Continuation
from mediaflow_worker.media import mux
from mediaflow_worker.media.concat import SegmentedBody, concatenable, fingerprint
from mediaflow_worker.media.fetcher import Fetcher
from mediaflow_worker.media.metrics import MEDIA_FAILURES, MEDIA_TASKS, UNRESOLVED
from mediaflow_worker.media.opening import MediaConfig, open_plan
from mediaflow_worker.media.plan import PROBE_BYTES, Format, Info, Options, Plan
from mediaflow_worker.media.segments import fetch_pieces
from mediaflow_worker.media.select import Selection, select
from mediaflow_worker.media.streams import (
    Segments,
    Stream,
    codecs,
    ffmpeg_inputs,
    format_headers,
    piece_fetch,
    single_stream,
    stream_pieces,
)
from mediaflow_worker.resolve import Resolvers
from mediaflow_worker.resume import Restarted, ResumableBody


@dataclass(frozen=True)
class Described:
    """What a stored file is: the name it is saved as, and API.md's ``media``."""

    filename: str
    media: dict[str, Any]


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
    # ffprobe of ``head``, started once the head is whole so that it runs while the rest
    # is stored instead of after it (its start-up alone is about 90 ms).
    probing: asyncio.Task[Info] | None = None

    def probe_head(self) -> asyncio.Task[Info]:
        if self.probing is None:
            self.probing = asyncio.create_task(mux.probe(bytes(self.head)))
        return self.probing

    async def stop_probing(self) -> None:
        """Forget the probe of a head that is no longer the stored file's (or not needed)."""
        probing, self.probing = self.probing, None
        if probing is not None and not probing.done():
            probing.cancel()
            with suppress(asyncio.CancelledError):
                await probing

    @property
    def continued(self) -> bool:
        """Whether the bytes start where another attempt's stored parts end."""
        return self.body is not None and self.body.continued

    async def describe(self, content_type: str) -> Described:
        """The file name and API.md's ``media`` of the stored result."""
        probed = await self.probe_head()
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
    fetch = piece_fetch(fetcher, format_headers(found, plan.headers), config, plan.source_kind)
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
    inputs, video_input, audio_input = ffmpeg_inputs(
        fetcher, plan, selection, config, segments, listed
    )
    output = mux.output_for(
        options,
        video_input=video_input,
        audio_input=audio_input,
        codecs=codecs(selection.video, selection.audio),
    )
    report = mux.MuxReport()
    media = Media(mux.mux(inputs, output, report, kind=plan.source_kind), None, plan)
    media.report = report
    media.segments = segments
    return media


async def _tee(chunks: AsyncIterator[bytes], media: Media) -> AsyncIterator[bytes]:
    """The chunks, keeping the stored file's first PROBE_BYTES in ``media.head``."""
    head = media.head
    # A direct file going on from another attempt's parts came with its start already.
    keeping = not media.plan.start
    async for chunk in chunks:
        if isinstance(chunk, Restarted):
            await media.stop_probing()
            head.clear()  # the head probed is the new version's
            keeping = True
        if keeping and len(head) < PROBE_BYTES:
            head += chunk[: PROBE_BYTES - len(head)]
        if len(head) >= PROBE_BYTES:
            media.probe_head()
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
            media = Media(
                plan.source.chunks,
                plan.source.size,
                plan,
                head=bytearray(plan.start),
                body=plan.body,
            )
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
                codecs=codecs(selection.video, selection.audio),
            )
            single = single_stream(plan, selection, container)
            listed: Stream | None = None
            if single is not None:
                try:
                    listed = await stream_pieces(
                        fetcher, single, config, format_headers(single, plan.headers)
                    )
                except TaskFailure as exc:
                    MEDIA_FAILURES.labels(plan.source_kind, exc.code).inc()
                    raise
            if single is not None and listed is not None and concatenable(listed.pieces):
                media = await _as_is(fetcher, plan, single, listed, config, options, continuation)
            else:
                media = _muxed(fetcher, plan, selection, config, options, listed)
        chunks = media.chunks
        media.chunks = _tee(chunks, media)
        try:
            yield media
        except TaskFailure as exc:
            MEDIA_FAILURES.labels(plan.source_kind, exc.code).inc()
            raise
        finally:
            await media.stop_probing()
            # The store may stop reading early: ffmpeg is stopped and responses closed now.
            for stream in (media.chunks, chunks):
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
