"""Tell media from everything else by its first bytes, never by what the server claims."""

from __future__ import annotations

# Enough for every signature below (the EBML DocType sits within the first ~40 bytes).
SNIFF_BYTES = 64

_FTYP_BRANDS = {
    b"qt  ": "video/quicktime",
    b"M4A ": "audio/mp4",
    b"M4B ": "audio/mp4",
    b"3gp4": "video/3gpp",
    b"3gp5": "video/3gpp",
    b"3gp6": "video/3gpp",
}
# MPEG audio: bitrate index 1111 and sample-rate index 11 are invalid in a real frame header.
_MPEG_BAD_BITRATE = 0x0F
_MPEG_BAD_RATE = 0x03


def _mpeg_audio_frame(head: bytes) -> bool:
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 0x03, (head[1] >> 1) & 0x03
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 0x03
    valid_header = bitrate != _MPEG_BAD_BITRATE and rate != _MPEG_BAD_RATE
    return version != 0x01 and layer != 0 and valid_header


def sniff_media_type(head: bytes) -> str | None:
    """The media type of a file starting with ``head``, or None when it is not media we take."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12], "video/mp4")
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska, or WebM by its DocType
        return "video/webm" if b"webm" in head[:SNIFF_BYTES] else "video/x-matroska"
    if head.startswith(b"RIFF") and len(head) >= 12:
        return {b"WAVE": "audio/wav", b"WEBP": "image/webp", b"AVI ": "video/x-msvideo"}.get(
            head[8:12]
        )
    if head.startswith(b"OggS"):
        return "video/ogg" if b"\x80theora" in head[:SNIFF_BYTES] else "audio/ogg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"ID3") or _mpeg_audio_frame(head):
        return "audio/mpeg"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    return None
