"""A media playlist is read without yt-dlp: the format it gives must be the one yt-dlp's own
parser gives, DRM refused alike."""

from __future__ import annotations

import pytest

from mediaflow_worker.errors import TaskFailure
from mediaflow_worker.media import extractor, hls

URL = "http://127.0.0.1:9/hls/index.m3u8"
MEDIA = (
    "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n"
    "{key}#EXTINF:4.0,\nindex0.ts\n#EXTINF:4.0,\nindex1.ts\n#EXT-X-ENDLIST\n"
)


def yt_dlp_formats(text: str) -> list[dict[str, object]]:
    formats, _ = extractor.parser(None)._parse_m3u8_formats_and_subtitles(  # type: ignore[arg-type]
        text, URL, ext="mp4", entry_protocol="m3u8_native", m3u8_id="hls"
    )
    return formats


@pytest.mark.parametrize(
    "key", ["", '#EXT-X-KEY:METHOD=AES-128,URI="key.bin"\n'], ids=["clear", "aes-128"]
)
async def test_a_media_playlist_is_the_one_format_yt_dlp_would_make_of_it(key: str) -> None:
    text = MEDIA.format(key=key)
    assert hls.master_formats(None, text, URL) == yt_dlp_formats(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "key",
    [
        '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="skd://key"\n',
        '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="k",KEYFORMAT="com.apple.streamingkeydelivery"\n',
        '#EXT-X-KEY:METHOD=SAMPLE-AES,KEYFORMAT="com.microsoft.playready",URI="k"\n',
    ],
    ids=["fairplay-uri", "fairplay-format", "playready"],
)
async def test_a_drm_media_playlist_is_refused_as_yt_dlp_marks_it(key: str) -> None:
    text = MEDIA.format(key=key)
    assert all(f["has_drm"] for f in yt_dlp_formats(text))
    with pytest.raises(TaskFailure) as refused:
        hls.master_formats(None, text, URL)  # type: ignore[arg-type]
    assert refused.value.code == "not_media"
