"""HLS: master playlists become formats (yt-dlp's parser), media playlists become the
segments to fetch: MPEG-TS or fMP4 (``EXT-X-MAP``), byte ranges, AES-128 keys."""

from __future__ import annotations

import re
from contextlib import suppress
from dataclasses import dataclass
from urllib.parse import urljoin

from mediaflow_worker.errors import TaskFailure
from mediaflow_worker.media.fetcher import Fetcher
from mediaflow_worker.media.plan import Format
from mediaflow_worker.media.segments import Key, Piece

_ATTRIBUTE = re.compile(r'(?P<key>[A-Z0-9-]+)=(?P<value>"[^"]*"|[^",]*)(?:,|$)')
# The DRM schemes yt-dlp's HLS parser recognises (its ``HlsFD._has_drm``).
_DRM = re.compile(
    r'#EXT-X-(?:SESSION-)?KEY:.*?URI="skd://'
    r'|#EXT-X-(?:SESSION-)?KEY:.*?KEYFORMAT="com\.apple\.streamingkeydelivery"'
    r'|#EXT-X-(?:SESSION-)?KEY:.*?KEYFORMAT="com\.microsoft\.playready"'
    r"|#EXT-X-FAXS-CM:"
)


def parse_m3u8_attributes(text: str) -> dict[str, str]:
    """``KEY=value,KEY="quoted, value"`` as a dict, quotes removed."""
    return {m["key"]: m["value"].strip('"') for m in _ATTRIBUTE.finditer(text)}


def is_playlist(head: bytes) -> bool:
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"#EXTM3U")


def master_formats(fetcher: Fetcher, text: str, url: str) -> list[Format]:
    """The variants and renditions of a master playlist, or the one format a media
    playlist is."""
    if "#EXT-X-TARGETDURATION" in text:
        # A media playlist is one format as it is (what yt-dlp's parser makes of it too):
        # no need to load yt-dlp, which takes the best part of a second the first time.
        formats: list[Format] = [
            {
                "format_id": "hls",
                "format_index": None,
                "url": url,
                "ext": "mp4",
                "protocol": "m3u8_native",
                "preference": None,
                "quality": None,
                "has_drm": bool(_DRM.search(text)),
            }
        ]
    else:
        from mediaflow_worker.media import extractor

        formats, _ = extractor.parser(fetcher)._parse_m3u8_formats_and_subtitles(
            text, url, ext="mp4", entry_protocol="m3u8_native", m3u8_id="hls"
        )
    for found in formats:
        found.pop("_audio_group_id", None)
    return [f for f in formats if not f.get("has_drm")] or _drm_only(formats)


def _drm_only(formats: list[Format]) -> list[Format]:
    if formats:
        raise TaskFailure("not_media", "The playlist's streams are DRM-protected.")
    return []


def _byte_range(value: str, next_offset: int | None) -> tuple[int, int]:
    """``n[@o]`` as (offset, length); without ``@o`` the range follows the previous one."""
    length, _, offset = value.partition("@")
    if offset:
        return int(offset), int(length)
    if next_offset is None:
        raise TaskFailure("not_media", "The playlist has a byte range with no offset to follow.")
    return next_offset, int(length)


@dataclass(frozen=True)
class MediaPlaylist:
    pieces: list[Piece]
    duration: float


def media_segments(text: str, url: str) -> MediaPlaylist:
    """The pieces of a media playlist in order: each ``EXT-X-MAP`` once before the
    segments it initialises, then the segments, each with its key and byte range."""
    if "#EXT-X-STREAM-INF" in text:
        raise TaskFailure("not_media", "A variant of the playlist is itself a master playlist.")
    pieces: list[Piece] = []
    sequence = 0
    key: Key | None = None
    byte_range: str | None = None  # the EXT-X-BYTERANGE of the next segment
    ends: dict[str, int] = {}  # where the last byte range of each resource ended
    duration = 0.0
    last_map: tuple[str, tuple[int, int] | None] | None = None
    pending_map: Piece | None = None
    seen_first = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            sequence = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-KEY:"):
            attributes = parse_m3u8_attributes(line.split(":", 1)[1])
            method = attributes.get("METHOD", "NONE")
            if method == "NONE":
                key = None
            elif method == "AES-128" and attributes.get("URI"):
                iv = attributes.get("IV")
                key = Key(
                    urljoin(url, attributes["URI"]),
                    bytes.fromhex(iv[2:].rjust(32, "0")) if iv else None,
                )
            else:
                raise TaskFailure("not_media", f"The playlist is encrypted with {method} (DRM).")
        elif line.startswith("#EXT-X-MAP:"):
            attributes = parse_m3u8_attributes(line.split(":", 1)[1])
            map_url = urljoin(url, attributes["URI"])
            map_range = (
                _byte_range(attributes["BYTERANGE"], 0) if "BYTERANGE" in attributes else None
            )
            if (map_url, map_range) != last_map:
                last_map = (map_url, map_range)
                # An init section under a key is encrypted with it (its IV must be explicit).
                pending_map = Piece(map_url, map_range, key if key and key.iv else None, init=True)
        elif line.startswith("#EXTINF:"):
            with suppress(ValueError):
                duration += float(line.split(":", 1)[1].split(",", 1)[0])
        elif line.startswith("#EXT-X-BYTERANGE:"):
            byte_range = line.split(":", 1)[1]
        elif line.startswith("#"):
            continue
        else:
            segment_url = urljoin(url, line)
            segment_range = None
            if byte_range is not None:
                segment_range = _byte_range(byte_range, ends.get(segment_url))
                ends[segment_url] = segment_range[0] + segment_range[1]
                byte_range = None
            if pending_map is not None:
                pieces.append(pending_map)
                pending_map = None
            segment_iv = key.iv if key and key.iv else sequence.to_bytes(16, "big")
            pieces.append(
                Piece(
                    segment_url,
                    segment_range,
                    Key(key.url, segment_iv) if key else None,
                    init=False,
                )
            )
            sequence += 1
            seen_first = True
    if not seen_first:
        raise TaskFailure("not_media", "The playlist lists no segments.")
    return MediaPlaylist(pieces, duration)
