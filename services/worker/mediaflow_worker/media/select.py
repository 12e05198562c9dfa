"""Which formats satisfy the options: the video by ``quality`` (the best at or below the
height asked for, the smallest above it when none is), the audio by ``mode``."""

from __future__ import annotations

from dataclasses import dataclass

from mediaflow_worker.errors import TaskFailure
from mediaflow_worker.media.plan import Format, Options

# What the worker can fetch itself; anything else (RTMP, f4m, websockets) is left out.
PROTOCOLS = frozenset(
    {"http", "https", "m3u8", "m3u8_native", "http_dash_segments", "http_dash_segments_generator"}
)


@dataclass(frozen=True)
class Selection:
    """The formats to fetch: one with both, or a video and an audio to mux; ``drop_audio``
    and ``drop_video`` ask ffmpeg to leave a stream of a combined format out."""

    video: Format | None
    audio: Format | None
    drop_audio: bool = False
    drop_video: bool = False


def has_video(f: Format) -> bool:
    return f.get("vcodec") != "none"


def has_audio(f: Format) -> bool:
    return f.get("acodec") != "none"


def _video_rank(f: Format) -> tuple[float, float]:
    return float(f.get("height") or 0), float(f.get("tbr") or f.get("vbr") or 0)


def _audio_rank(f: Format) -> tuple[float, float]:
    # Renditions an extractor marks as alternates (audio description) come last.
    return float(f.get("source_preference") or 0), float(f.get("abr") or f.get("tbr") or 0)


def _height_for(heights: set[int], quality: Options) -> int | None:
    if quality.quality == "best" or not heights:
        return max(heights) if heights else None
    below = [h for h in heights if h <= quality.quality]
    return max(below) if below else min(heights)


def select(formats: list[Format], options: Options) -> Selection:
    usable = [f for f in formats if (f.get("protocol") or "https") in PROTOCOLS and f.get("url")]
    videos = [f for f in usable if has_video(f)]
    audios = [f for f in usable if not has_video(f) and has_audio(f)]
    if options.mode == "audio":
        if audios:
            return Selection(None, max(audios, key=_audio_rank))
        combined = [f for f in videos if has_audio(f)]
        if not combined:
            raise TaskFailure("format_unavailable", "The media has no audio.")
        # The audio is the same in every variant, as a rule: the lightest carries it.
        lightest = min(combined, key=_video_rank)
        return Selection(lightest, None, drop_video=True)
    if not videos:
        raise TaskFailure("format_unavailable", "The media has no video stream.")
    height = _height_for({int(f["height"]) for f in videos if f.get("height")}, options)
    at_height = [f for f in videos if height is None or f.get("height") == height] or videos
    if options.mode == "mute":
        video_only = [f for f in at_height if not has_audio(f)]
        chosen = max(video_only or at_height, key=_video_rank)
        return Selection(chosen, None, drop_audio=True)
    chosen = max(at_height, key=lambda f: (has_audio(f) and not audios, *_video_rank(f)))
    if has_audio(chosen) and not (chosen.get("acodec") is None and audios):
        return Selection(chosen, None)
    audio = max(audios, key=_audio_rank) if audios else None
    return Selection(chosen, audio, drop_audio=audio is not None)
