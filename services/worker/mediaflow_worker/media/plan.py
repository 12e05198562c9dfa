"""The resolver contract: what a URL turns out to be, before any media byte is fetched.

A resolver turns a URL into a :class:`Plan`: a direct file, one manifest (HLS or DASH), or
the formats an extractor found (direct files, manifests, separate video and audio), with
what is known of the media (title, duration). Formats are described as yt-dlp describes
them (``url``, ``protocol``, ``height``, ``vcodec``, ``acodec``, ``fragments``, …): the
manifest parsers and the extractor hand over the same shape, so one selection
(:mod:`.select`) and one downloader (:mod:`.segments`) serve them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mediaflow_worker.errors import TaskFailure
from mediaflow_worker.fetch import Source

if TYPE_CHECKING:
    from mediaflow_worker.resume import ResumableBody

SourceKind = str  # "file", "page", "hls", "dash", or the extractor's name
Quality = int | Literal["best"]
Mode = Literal["auto", "audio", "mute"]
AudioFormat = Literal["original", "mp3", "opus"]

PROBE_BYTES = 1024 * 1024  # of the stored file's start, for ffprobe
QUALITIES: tuple[int, ...] = (2160, 1440, 1080, 720, 480, 360, 240, 144)
MODES: tuple[str, ...] = ("auto", "audio", "mute")
AUDIO_FORMATS: tuple[str, ...] = ("original", "mp3", "opus")

Format = dict[str, Any]  # one format, in yt-dlp's vocabulary


@dataclass(frozen=True)
class Options:
    """What the user asked for (API.md's options); defaults mean "as the source has it"."""

    quality: Quality = "best"
    mode: Mode = "auto"
    audio_format: AudioFormat = "original"

    @property
    def is_default(self) -> bool:
        return self == Options()

    @classmethod
    def from_job(cls, quality: str, mode: str, audio_format: str) -> Options:
        """From the job message's fields (empty for the default); a value this worker does
        not know fails the task rather than being guessed at."""
        options = cls(
            quality=int(quality) if quality.isdigit() else "best",
            mode=mode or "auto",  # type: ignore[arg-type]
            audio_format=audio_format or "original",  # type: ignore[arg-type]
        )
        valid = (
            (options.quality == "best" or options.quality in QUALITIES)
            and options.mode in MODES
            and options.audio_format in AUDIO_FORMATS
            and (quality in ("", "best") or quality.isdigit())
        )
        if not valid:
            raise TaskFailure("format_unavailable", "The task's options are not ones we know.")
        return options

    def cache_suffix(self) -> str:
        """What sets this task's stored result apart from the default one of its URL."""
        if self.is_default:
            return ""
        return f"#mediaflow:{self.quality}:{self.mode}:{self.audio_format}"


@dataclass(frozen=True)
class Info:
    """What is known of the media before it is fetched; each field None when unknown."""

    title: str | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    video_codec: str | None = None
    audio_codec: str | None = None


@dataclass
class Plan:
    """A URL's media: ``direct`` (one file, ``source`` already open when the resolver
    opened it), ``manifest`` (one HLS or DASH document, its formats parsed) or ``formats``
    (what an extractor found)."""

    kind: Literal["direct", "manifest", "formats"]
    url: str
    source_kind: SourceKind
    formats: list[Format] = field(default_factory=list)
    info: Info = field(default_factory=Info)
    source: Source | None = None
    # Request headers an extractor says its formats need (a Referer, say).
    headers: dict[str, str] = field(default_factory=dict)
    # A direct file's body, which survives the source breaking off.
    body: ResumableBody | None = None
    # A direct file's first bytes (up to PROBE_BYTES) when its body starts where another
    # attempt's stored parts end: what the stored file is, is probed from its start.
    start: bytes = b""
