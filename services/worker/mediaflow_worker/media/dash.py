"""DASH: an MPD's representations become formats (yt-dlp's parser: SegmentTemplate by
number or time, SegmentList, SegmentBase), their fragments the pieces to fetch."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urljoin

from mediaflow_worker.errors import TaskFailure
from mediaflow_worker.media.fetcher import Fetcher
from mediaflow_worker.media.plan import Format
from mediaflow_worker.media.segments import Piece

_MPD_STARTS = (b"<?xml", b"<mpd", b"<!--")


def is_mpd(head: bytes, content_type: str) -> bool:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if content_type == "application/dash+xml":
        return True
    return start.startswith(_MPD_STARTS) and b"<mpd" in head.lower()


def mpd_formats(fetcher: Fetcher, text: str, url: str) -> list[Format]:
    from mediaflow_worker.media import extractor

    try:
        # Expat (>= 2.4) refuses entity-expansion bombs; external entities are not loaded.
        document = ET.fromstring(text)  # noqa: S314
    except ET.ParseError as exc:
        raise TaskFailure("not_media", "The DASH manifest is not well-formed XML.") from exc
    if document.get("type") == "dynamic":
        raise TaskFailure("not_media", "Live DASH streams cannot be stored.")
    base = url.rsplit("/", 1)[0] + "/"
    formats, _ = extractor.parser(fetcher)._parse_mpd_formats_and_subtitles(
        document, mpd_id="dash", mpd_base_url=base, mpd_url=url
    )
    usable = [f for f in formats if not f.get("has_drm")]
    if formats and not usable:
        raise TaskFailure("not_media", "The manifest's streams are DRM-protected.")
    return usable


def fragment_pieces(found: Format) -> list[Piece]:
    """The fragments of a segmented representation, init section first."""
    base = found.get("fragment_base_url") or found.get("url") or ""
    pieces = []
    for index, fragment in enumerate(found.get("fragments") or []):
        url = fragment.get("url") or urljoin(base, fragment["path"])
        pieces.append(Piece(url, init=index == 0 and "duration" not in fragment))
    return pieces
