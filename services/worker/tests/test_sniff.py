from __future__ import annotations

import struct

import pytest

from mediaflow_worker.sniff import sniff_media_type


def ftyp(brand: bytes) -> bytes:
    return struct.pack(">I4s4sI", 24, b"ftyp", brand, 0) + b"isomiso2" + b"\0" * 40


WEBM = bytes.fromhex("1a45dfa39f4286810142f7810142f2810442f381084282847765626d42878104")
MKV = bytes.fromhex("1a45dfa3a34286810142f7810142f2810442f3810842828b6d6174726f736b61")


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (ftyp(b"isom"), "video/mp4"),
        (ftyp(b"mp42"), "video/mp4"),
        (ftyp(b"qt  "), "video/quicktime"),
        (ftyp(b"M4A "), "audio/mp4"),
        (ftyp(b"3gp5"), "video/3gpp"),
        (WEBM + b"\0" * 32, "video/webm"),
        (MKV + b"\0" * 32, "video/x-matroska"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\0" * 54, "audio/mpeg"),
        (b"\xff\xfb\x90\x64" + b"\0" * 60, "audio/mpeg"),  # MPEG-1 layer III frame header
        (b"OggS\x00\x02" + b"\0" * 58, "audio/ogg"),
        (b"fLaC\x00\x00\x00\x22" + b"\0" * 56, "audio/flac"),
        (b"RIFF\x24\x08\x00\x00WAVEfmt " + b"\0" * 48, "audio/wav"),
        (b"RIFF\x24\x08\x00\x00WEBPVP8 " + b"\0" * 48, "image/webp"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\0" * 54, "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\0" * 48, "image/png"),
        (b"GIF89a\x01\x00\x01\x00" + b"\0" * 54, "image/gif"),
    ],
)
def test_media_is_recognised_by_its_first_bytes(head: bytes, expected: str) -> None:
    assert sniff_media_type(head) == expected


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"<!doctype html><html><head><title>Video</title></head>",
        b'{"url": "https://example.com/video.mp4"}',
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
        b"PK\x03\x04\x14\x00\x00\x00\x08\x00",  # zip
        b"RIFF\x24\x08\x00\x00XXXX",  # RIFF, but neither WAVE nor WEBP
        b"\xff\xff\xff\xff\xff\xff",  # frame sync with an invalid bitrate
        b"\x00\x00\x00\x18moov",  # an ISO box, but not ftyp
    ],
)
def test_everything_else_is_not_media(head: bytes) -> None:
    assert sniff_media_type(head) is None
