"""Media sources the worker's media tests fetch: made once per test session with ffmpeg's
lavfi sources (a few seconds each, never committed) and served from 127.0.0.1, with a log
of every request the origin saw."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from devstack import stack

DURATION = 4  # seconds of every source but the long one
LONG_DURATION = 12
FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
FFPROBE = shutil.which("ffprobe") or "/usr/bin/ffprobe"
AES_KEY = bytes(range(16))
AES_IV = "0f0e0d0c0b0a09080706050403020100"  # explicit, as ffmpeg writes it


def _ffmpeg(*args: str | Path, cwd: Path) -> None:
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *map(str, args)],
        cwd=cwd,
        check=True,
    )


def make_video(
    size: str, cwd: Path, name: str, *, audio: bool = True, duration: int = DURATION
) -> Path:
    inputs: list[str] = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate=25:duration={duration}"]
    codecs = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p"]
    if audio:
        inputs += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={duration}"]
        codecs += ["-c:a", "aac", "-b:a", "64k", "-shortest"]
    _ffmpeg(*inputs, *codecs, "-movflags", "+faststart", name, cwd=cwd)
    return cwd / name


def make_hls(source: Path, out: Path, *extra: str, maps: tuple[str, ...] = ()) -> None:
    out.mkdir(parents=True)
    _ffmpeg(
        "-i", source, *maps, "-c", "copy", "-f", "hls", "-hls_time", "1",
        "-hls_playlist_type", "vod", *extra, "index.m3u8", cwd=out,
    )  # fmt: skip


def generate(root: Path) -> None:
    """Everything under ``root``, as the origin serves it."""
    work = root / "_work"
    work.mkdir(parents=True)
    src = make_video("640x360", work, "src.mp4")
    small = make_video("426x240", work, "small.mp4")
    silent = make_video("640x360", work, "silent.mp4", audio=False)
    shutil.copy(src, root / "file.mp4")
    # HLS: MPEG-TS segments; fMP4 segments; one file in byte ranges; AES-128.
    make_hls(src, root / "ts")
    make_hls(src, root / "fmp4", "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4")
    make_hls(src, root / "ranges", "-hls_flags", "single_file")
    (work / "key.bin").write_bytes(AES_KEY)
    (work / "keyinfo").write_text(f"key.bin\n{work / 'key.bin'}\n{AES_IV}\n")
    make_hls(src, root / "aes", "-hls_key_info_file", str(work / "keyinfo"))
    shutil.copy(work / "key.bin", root / "aes" / "key.bin")
    make_hls(silent, root / "silent")
    # Longer than ffmpeg reads before it writes anything (5 s of media): output, and so
    # progress, flows while segments are still being fetched.
    long = make_video("320x180", work, "long.mp4", duration=LONG_DURATION)
    make_hls(long, root / "long")
    # A master playlist: 360p and 240p video-only variants and an audio group.
    make_hls(src, root / "master" / "v360", maps=("-map", "0:v"))
    make_hls(small, root / "master" / "v240", maps=("-map", "0:v"))
    make_hls(src, root / "master" / "audio", maps=("-map", "0:a"))
    (root / "master" / "master.m3u8").write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n"
        '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English",LANGUAGE="en",DEFAULT=YES,'
        'AUTOSELECT=YES,URI="audio/index.m3u8"\n'
        '#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=426x240,CODECS="avc1.64001e",AUDIO="aud"\n'
        "v240/index.m3u8\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=600000,RESOLUTION=640x360,CODECS="avc1.64001e",AUDIO="aud"\n'
        "v360/index.m3u8\n"
    )
    # DASH, video and audio in separate adaptation sets: SegmentTemplate by number and by
    # time, SegmentList, SegmentBase.
    dash_kinds = {
        "number": ["-use_template", "1", "-use_timeline", "0"],
        "time": ["-use_template", "1", "-use_timeline", "1",
                 "-media_seg_name", "chunk-$RepresentationID$-$Time$.m4s"],
        "list": ["-use_template", "0", "-use_timeline", "0"],
        "base": ["-single_file", "1"],
    }  # fmt: skip
    for kind, extra in dash_kinds.items():
        out = root / "dash" / kind
        out.mkdir(parents=True)
        _ffmpeg(
            "-i", src, "-map", "0:v", "-map", "0:a", "-c", "copy", "-f", "dash",
            "-seg_duration", "1", *extra, "manifest.mpd", cwd=out,
        )  # fmt: skip
    # ffmpeg names the first audio segment by its (negative) priming time, the MPD says 0.
    for early in (root / "dash" / "time").glob("chunk-*--*.m4s"):
        early.rename(early.with_name(re.sub(r"--\d+", "-0", early.name)))
    # ffmpeg writes one file per stream as a SegmentList of byte ranges: SegmentBase says
    # the same (the whole file per representation).
    manifest = root / "dash" / "base" / "manifest.mpd"
    manifest.write_text(
        re.sub(
            r"<SegmentList.*?</SegmentList>",
            '<SegmentBase indexRange="0-0" />',
            manifest.read_text(),
            flags=re.DOTALL,
        )
    )
    shutil.rmtree(work)


@dataclass
class MediaOrigin:
    """The generated sources over HTTP on 127.0.0.1, and the paths of requests it saw."""

    base_url: str
    root: Path
    seen: list[str] = field(default_factory=list)
    pages: dict[str, str] = field(default_factory=dict)  # extra paths → HTML
    overrides: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = field(
        default_factory=dict
    )

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def page(self, path: str, html: str) -> str:
        self.pages["/" + path.lstrip("/")] = html
        return self.url(path)


@pytest.fixture(scope="session")
async def media_origin(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MediaOrigin]:
    root = tmp_path_factory.mktemp("media-sources")
    await asyncio.to_thread(generate, root)
    port = stack.free_port()
    served = MediaOrigin(f"http://127.0.0.1:{port}", root)

    async def serve(request: web.Request) -> web.StreamResponse:
        served.seen.append(request.path_qs)
        if request.path in served.overrides:
            return await served.overrides[request.path](request)
        if request.path in served.pages:
            return web.Response(text=served.pages[request.path], content_type="text/html")
        path = (root / request.path.lstrip("/")).resolve()
        if root not in path.parents or not path.is_file():
            raise web.HTTPNotFound
        content_types = {
            ".m3u8": "application/vnd.apple.mpegurl",
            ".mpd": "application/dash+xml",
            ".ts": "video/mp2t",
        }
        return web.FileResponse(
            path, headers={"Content-Type": content_types.get(path.suffix, "video/mp4")}
        )

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield served
    finally:
        await runner.cleanup()


def ffprobe(path: Path) -> dict[str, object]:
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        check=True,
        capture_output=True,
    ).stdout
    found: dict[str, object] = json.loads(out)
    return found
