"""The bytes of a plan's formats: a file as it comes, a segmented format's pieces in order,
and which of them ffmpeg takes as its inputs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from mediaflow_worker.fetch import Source
from mediaflow_worker.media import dash, hls, mux
from mediaflow_worker.media.fetcher import Fetcher
from mediaflow_worker.media.opening import MediaConfig
from mediaflow_worker.media.plan import Format, Plan
from mediaflow_worker.media.segments import Piece, PieceFetch, fetch_pieces
from mediaflow_worker.media.select import Selection


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


def codecs(*formats: Format | None) -> tuple[str | None, ...]:
    return tuple(f.get(key) for f in formats if f for key in ("vcodec", "acodec"))


def segmented(found: Format) -> bool:
    protocol = found.get("protocol") or "https"
    return protocol in ("m3u8", "m3u8_native") or protocol.startswith("http_dash_segments")


def format_headers(found: Format, plan_headers: dict[str, str]) -> dict[str, str]:
    return {**plan_headers, **(found.get("http_headers") or {})}


@dataclass(frozen=True)
class Stream:
    """A segmented format's pieces in order, and its duration when its playlist says."""

    url: str
    pieces: list[Piece]
    duration: float | None


async def stream_pieces(
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


def piece_fetch(
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


async def format_stream(
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
    headers = format_headers(found, plan_headers)
    if not segmented(found):
        async with fetcher.open(found["url"], headers=headers) as source:
            async for chunk in source.chunks:
                yield chunk
        return
    stream = known or await stream_pieces(fetcher, found, config, headers)
    segments.known += len(stream.pieces)
    fetch = piece_fetch(fetcher, headers, config, kind)
    async for body in fetch_pieces(fetch, stream.pieces, segments.handed_on):
        yield body


async def source_stream(source: Source) -> AsyncIterator[bytes]:
    async for chunk in source.chunks:
        yield chunk


def ffmpeg_inputs(
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
            return source_stream(plan.source)
        return format_stream(
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


def single_stream(plan: Plan, selection: Selection, output: mux.Output) -> Format | None:
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
    return found if found is not None and segmented(found) else None
