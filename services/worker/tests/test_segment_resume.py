"""One fMP4 stream stored as it is: an HLS playlist's init section and segments (or a DASH
representation's) concatenated into the stored file without ffmpeg, and a task that fails
or whose worker dies midway going on at the segment where its stored parts end. MPEG-TS and
two streams are still muxed. Sources are made with ffmpeg by the test session and served on
127.0.0.1; the worker runs in-process (or as a process of its own, to be SIGKILLed)
against the real PostgreSQL, RabbitMQ and SeaweedFS."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp import web
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from devstack import stack
from mediaflow_libs.amqp import Topology
from services.worker.tests.media_sources import (
    DURATION,
    FFMPEG,
    MediaOrigin,
    ffprobe,
    media_origin,
)
from services.worker.tests.support import (
    TASK_COST,
    Submit,
    Worker,
    counted,
    create_task,
    events,
    eventually,
    finished,
    ledger,
    open_uploads,
    own_namespace,
    remove_stored,
    running,
    stored_keys,
    worker_settings,
)
from services.worker.tests.test_worker_takeover import worker_process

__all__ = ["media_origin"]

LARGE_SECONDS = 6  # one-second segments of about 7 MB each: several upload parts
WRITE_BYTES = 256 * 1024
AES_KEY = bytes(range(16))


def muxes(kind: str) -> float:
    """ffmpeg runs for sources of ``kind``: one observation of the mux's duration each."""
    return counted("worker_media_mux_duration_seconds_count", kind=kind)


def make_fmp4_hls(out: Path, seconds: int, prefix: str, seed: int) -> None:
    """A 640x360 noise video, losslessly encoded (big segments), as fMP4 HLS in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i",
            f"testsrc=size=640x360:rate=25:duration={seconds},noise=alls=60:allf=t:all_seed={seed}",
            "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
            "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-g", "25",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-shortest",
            "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod",
            "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", f"{prefix}-init.mp4",
            "-hls_segment_filename", f"{prefix}%d.m4s", f"{prefix}.m3u8",
        ],
        cwd=out,
        check=True,
    )  # fmt: skip


def listed_files(playlist: Path) -> list[str]:
    """The init section and the segments a playlist names, in order."""
    text = playlist.read_text()
    init = re.findall(r'#EXT-X-MAP:URI="([^"]+)"', text)
    segments = [line for line in text.splitlines() if line and not line.startswith("#")]
    return init + segments


def parts_recorded(pool: asyncpg.Pool, task_id: str, count: int) -> Callable[[], Awaitable[bool]]:
    async def recorded() -> bool:
        found = await pool.fetchval(
            "SELECT count(*) FROM media.task_upload_parts WHERE task_id = $1", task_id
        )
        return bool(found >= count)

    return recorded


def concatenation(directory: Path, names: list[str]) -> bytes:
    return b"".join((directory / name).read_bytes() for name in names)


def resumed_from(origin: SegmentOrigin, names: list[str]) -> tuple[int, int]:
    """The one segment asked for by a range (its index in ``names``), and the offset in the
    stored object the range starts at; checks it was fetched whole once before."""
    ranged = [name for name in names if any(origin.fetched(name))]
    assert len(ranged) == 1, ranged
    asked = origin.fetched(ranged[0])
    assert asked[0] is None and len(asked) == 2, asked
    inside = int(re.fullmatch(r"bytes=(\d+)-", asked[1] or "")[1])  # type: ignore[index]
    at = names.index(ranged[0])
    sizes = [(origin.root / name).stat().st_size for name in names]
    assert 0 < inside < sizes[at]
    return at, sum(sizes[:at]) + inside


@dataclass
class SegmentOrigin:
    """``root`` over HTTP on 127.0.0.1 (``Range: bytes=a-[b]`` honoured), with a log of
    every request and its ``Range``; ``refuse[path]`` answers that many requests 503,
    ``ranges`` False answers every request with the whole file; ``playlists[path]`` is
    served instead of the file (``on_refused`` runs at each
    refusal); ``pause`` between writes."""

    root: Path
    port: int = 0
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    refuse: dict[str, int] = field(default_factory=dict)
    playlists: dict[str, str] = field(default_factory=dict)
    pause: float = 0.0
    ranges: bool = True  # False: every answer is the whole file, whatever was asked
    on_refused: Callable[[], Awaitable[None]] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def fetched(self, name: str) -> list[str | None]:
        """The ``Range`` of every request for ``name`` (None: the whole file)."""
        return [wanted for path, wanted in self.requests if path == f"/{name}"]

    async def serve(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, request.headers.get("Range")))
        if self.refuse.get(request.path, 0) > 0:
            self.refuse[request.path] -= 1
            if self.on_refused is not None:
                await self.on_refused()
            return web.Response(status=503, text="busy")
        if request.path in self.playlists:
            return web.Response(
                text=self.playlists[request.path], content_type="application/vnd.apple.mpegurl"
            )
        path = self.root / request.path.lstrip("/")
        if not path.is_file():
            raise web.HTTPNotFound
        body = path.read_bytes()
        start, end, status = 0, len(body), 200
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("Range", ""))
        if wanted and self.ranges:
            start = int(wanted[1])
            end = int(wanted[2]) + 1 if wanted[2] else len(body)
            status = 206
        headers = {"Content-Length": str(end - start), "Content-Type": "video/mp4"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(body)}"
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        try:
            for at in range(start, end, WRITE_BYTES):
                await response.write(body[at : min(at + WRITE_BYTES, end)])
                if self.pause:
                    await asyncio.sleep(self.pause)
        except ConnectionResetError:
            pass  # the worker went away, as the test wanted
        return response


@pytest.fixture(scope="module")
def large_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two versions of a large fMP4 stream, their files named apart (``a…``, ``b…``)."""
    root = tmp_path_factory.mktemp("large-fmp4")
    make_fmp4_hls(root, LARGE_SECONDS, "a", seed=1)
    make_fmp4_hls(root, 3, "b", seed=2)
    return root


@pytest.fixture
async def origin(large_sources: Path) -> AsyncIterator[SegmentOrigin]:
    served = SegmentOrigin(large_sources)
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", served.serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    served.port = stack.free_port()
    await web.TCPSite(runner, "127.0.0.1", served.port).start()
    try:
        yield served
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def worker(infra: Any, db_pool: asyncpg.Pool) -> AsyncIterator[Worker]:
    # A segment refused once fails its attempt at once: the next attempt is what is tested.
    settings = worker_settings(infra, segment_retries=0)
    async with (
        own_namespace(infra, db_pool, Topology(settings.amqp_namespace)),
        running(settings, asyncio.Event()) as started,
    ):
        yield started


async def stored_bytes(s3: Any, bucket: str, row: asyncpg.Record) -> bytes:
    answer = await s3.get_object(Bucket=bucket, Key=row["object_key"])
    async with answer["Body"] as body:
        data: bytes = await body.read()
    return data


async def probed(s3: Any, bucket: str, row: asyncpg.Record, tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "stored"
    path.write_bytes(await stored_bytes(s3, bucket, row))
    return ffprobe(path)


def streams(found: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["codec_type"]: s for s in found["streams"]}


async def test_an_fmp4_playlist_is_stored_as_its_segments_concatenated_without_ffmpeg(
    worker: Worker,
    submit: Submit,
    media_origin: MediaOrigin,
    db_pool: asyncpg.Pool,
    s3: Any,
    tmp_path: Path,
) -> None:
    bucket = worker.settings.s3_bucket
    directory = media_origin.root / "fmp4"
    muxed_before = muxes("hls")
    task = await submit(media_origin.url("fmp4/index.m3u8"))
    row = await finished(db_pool, task.task_id)
    assert row["status"] == "succeeded", row["error_message"]
    assert muxes("hls") == muxed_before  # ffmpeg never ran
    whole = concatenation(directory, listed_files(directory / "index.m3u8"))
    assert await stored_bytes(s3, bucket, row) == whole
    assert row["result_sha256"] == hashlib.sha256(whole).hexdigest()
    assert row["result_size"] == len(whole)
    # The same file as the muxed one would be, to a user: MP4, its streams, its length.
    assert (row["result_content_type"], row["result_filename"]) == ("video/mp4", "index.mp4")
    found = await probed(s3, bucket, row, tmp_path)
    assert (streams(found)["video"]["codec_name"], streams(found)["audio"]["codec_name"]) == (
        "h264",
        "aac",
    )
    assert abs(float(found["format"]["duration"]) - DURATION) < 0.5
    media = row["result_media"]
    assert (media["height"], media["video_codec"], media["audio_codec"]) == (360, "h264", "aac")
    assert abs(media["duration_seconds"] - DURATION) < 0.5
    await remove_stored(s3, bucket, task)


async def test_the_audio_of_a_dash_manifest_is_stored_as_its_representation_as_audio_mp4(
    worker: Worker,
    submit: Submit,
    media_origin: MediaOrigin,
    db_pool: asyncpg.Pool,
    s3: Any,
    tmp_path: Path,
) -> None:
    bucket = worker.settings.s3_bucket
    directory = media_origin.root / "dash" / "number"
    muxed_before = muxes("dash")
    task = await submit(media_origin.url("dash/number/manifest.mpd"), options={"mode": "audio"})
    row = await finished(db_pool, task.task_id)
    assert row["status"] == "succeeded", row["error_message"]
    assert muxes("dash") == muxed_before
    # The manifest lists DURATION one-second segments (ffmpeg writes a short tail it leaves
    # out of the manifest).
    chunks = sorted(directory.glob("chunk-stream1-*.m4s"))[:DURATION]
    audio = [directory / "init-stream1.m4s", *chunks]
    whole = b"".join(path.read_bytes() for path in audio)
    assert row["result_sha256"] == hashlib.sha256(whole).hexdigest()
    assert row["result_content_type"] == "audio/mp4"
    found = await probed(s3, bucket, row, tmp_path)
    assert set(streams(found)) == {"audio"}
    assert abs(float(found["format"]["duration"]) - DURATION) < 0.5
    await remove_stored(s3, bucket, task)


ONE_REPRESENTATION = """<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011"
     type="static" mediaPresentationDuration="PT{seconds}S" minBufferTime="PT2S">
  <Period id="0" start="PT0S">
    <AdaptationSet id="0" contentType="video" segmentAlignment="true">
      <Representation id="both" mimeType="video/mp4" codecs="avc1.42c01e,mp4a.40.2"
                      bandwidth="300000" width="640" height="360">
        <SegmentTemplate timescale="1" duration="1" startNumber="0"
                         initialization="init.mp4" media="index$Number$.m4s" />
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"""


async def test_a_dash_representation_holding_both_streams_is_stored_as_it_is(
    worker: Worker,
    submit: Submit,
    media_origin: MediaOrigin,
    db_pool: asyncpg.Pool,
    s3: Any,
    tmp_path: Path,
) -> None:
    """The fMP4 playlist's files (video and audio in each), named by an MPD instead."""
    directory = media_origin.root / "fmp4"
    (directory / "both.mpd").write_text(ONE_REPRESENTATION.format(seconds=DURATION))
    muxed_before = muxes("dash")
    task = await submit(media_origin.url("fmp4/both.mpd"))
    row = await finished(db_pool, task.task_id)
    assert row["status"] == "succeeded", row["error_message"]
    assert muxes("dash") == muxed_before
    whole = concatenation(directory, listed_files(directory / "index.m3u8"))
    assert row["result_sha256"] == hashlib.sha256(whole).hexdigest()
    assert row["result_content_type"] == "video/mp4"
    found = await probed(s3, worker.settings.s3_bucket, row, tmp_path)
    assert set(streams(found)) == {"video", "audio"}
    assert abs(row["result_media"]["duration_seconds"] - DURATION) < 0.5
    await remove_stored(s3, worker.settings.s3_bucket, task)


async def test_an_aes_encrypted_fmp4_playlist_is_stored_decrypted(
    worker: Worker,
    submit: Submit,
    media_origin: MediaOrigin,
    db_pool: asyncpg.Pool,
    s3: Any,
    tmp_path: Path,
) -> None:
    """Each segment AES-128-CBC encrypted with its media sequence number as IV, the init
    section in the clear (the key comes after the ``EXT-X-MAP``)."""
    source = media_origin.root / "fmp4"
    encrypted = media_origin.root / "fmp4-aes"
    if not encrypted.exists():
        encrypted.mkdir()
        (encrypted / "key.bin").write_bytes(AES_KEY)
        (encrypted / "init.mp4").write_bytes((source / "init.mp4").read_bytes())
        text = (source / "index.m3u8").read_text()
        for number, name in enumerate(listed_files(source / "index.m3u8")[1:]):
            padder = padding.PKCS7(128).padder()
            plain = padder.update((source / name).read_bytes()) + padder.finalize()
            cipher = Cipher(algorithms.AES(AES_KEY), modes.CBC(number.to_bytes(16, "big")))
            (encrypted / name).write_bytes(cipher.encryptor().update(plain))
        key_line = '#EXT-X-KEY:METHOD=AES-128,URI="key.bin"\n'
        (encrypted / "index.m3u8").write_text(
            re.sub(r"(#EXT-X-MAP:[^\n]*\n)", lambda m: m[1] + key_line, text)
        )
    muxed_before = muxes("hls")
    task = await submit(media_origin.url("fmp4-aes/index.m3u8"))
    row = await finished(db_pool, task.task_id)
    assert row["status"] == "succeeded", row["error_message"]
    assert muxes("hls") == muxed_before
    whole = concatenation(source, listed_files(source / "index.m3u8"))
    assert row["result_sha256"] == hashlib.sha256(whole).hexdigest()
    found = await probed(s3, worker.settings.s3_bucket, row, tmp_path)
    assert set(streams(found)) == {"video", "audio"}
    await remove_stored(s3, worker.settings.s3_bucket, task)


@pytest.mark.parametrize(
    ("path", "kind", "options"),
    [
        ("ts/index.m3u8", "hls", None),
        ("dash/number/manifest.mpd", "dash", None),
        ("fmp4/index.m3u8", "hls", {"mode": "mute"}),
    ],
)
async def test_ts_segments_two_streams_and_a_stream_left_out_are_still_muxed(
    path: str,
    kind: str,
    options: dict[str, str] | None,
    worker: Worker,
    submit: Submit,
    media_origin: MediaOrigin,
    db_pool: asyncpg.Pool,
    s3: Any,
    tmp_path: Path,
) -> None:
    muxed_before = muxes(kind)
    task = await submit(media_origin.url(path), options=options)
    row = await finished(db_pool, task.task_id)
    assert row["status"] == "succeeded", row["error_message"]
    assert muxes(kind) == muxed_before + 1
    assert row["result_content_type"] == "video/mp4"
    found = await probed(s3, worker.settings.s3_bucket, row, tmp_path)
    wanted = {"video"} if options else {"video", "audio"}
    assert set(streams(found)) == wanted
    await remove_stored(s3, worker.settings.s3_bucket, task)


@pytest.mark.parametrize("ranges", [True, False])
async def test_an_attempt_that_fails_midway_goes_on_at_the_segment_its_parts_end_in(
    ranges: bool,
    worker: Worker,
    submit: Submit,
    origin: SegmentOrigin,
    db_pool: asyncpg.Pool,
    s3: Any,
    tmp_path: Path,
) -> None:
    bucket, part = worker.settings.s3_bucket, worker.settings.upload_part_bytes
    names = listed_files(origin.root / "a.m3u8")
    whole = concatenation(origin.root, names)
    assert len(whole) > 4 * part, "the stream spans several parts"
    origin.refuse["/a4.m4s"] = 1  # the first attempt stops there: a3's bytes and before stored

    async def two_parts_stored() -> None:
        await eventually(parts_recorded(db_pool, task.task_id, 2))

    origin.on_refused = two_parts_stored
    origin.ranges = ranges
    across = counted("worker_resumes_total", kind="across_attempts")
    refetched = counted("worker_bytes_refetched_total")
    task = await submit(origin.url("a.m3u8"))
    row = await finished(db_pool, task.task_id)
    assert (row["status"], row["attempt"]) == ("succeeded", 2), row["error_message"]
    assert row["result_sha256"] == hashlib.sha256(whole).hexdigest()
    assert row["result_size"] == len(whole)
    assert await stored_bytes(s3, bucket, row) == whole
    assert counted("worker_resumes_total", kind="across_attempts") == across + 1
    # The second attempt asks for the segment the stored parts end in, from where they end
    # (a4 is refused once two parts are stored).
    at, stored = resumed_from(origin, names)
    assert stored >= 2 * part and stored % part == 0
    assert at <= names.index("a3.m4s")
    # The segments before it are never fetched again (the init section is, for the probe).
    for name in names[1:at]:
        assert origin.fetched(name) == [None]
    assert origin.fetched("a-init.mp4") == [None, None]
    # A source that ignores the range sends that segment whole: its stored prefix is
    # dropped, and counted as fetched twice.
    prefix = stored - sum((origin.root / name).stat().st_size for name in names[:at])
    if not ranges:
        assert counted("worker_bytes_refetched_total") - refetched >= prefix
    # The file is the same to a user as one stored in one go.
    found = await probed(s3, bucket, row, tmp_path)
    assert set(streams(found)) == {"video", "audio"}
    assert abs(float(found["format"]["duration"]) - LARGE_SECONDS) < 0.5
    assert abs(row["result_media"]["duration_seconds"] - LARGE_SECONDS) < 0.5
    assert (row["result_media"]["height"], row["result_content_type"]) == (360, "video/mp4")
    # The events: the second attempt starts where the stored bytes end, none goes back.
    history = [e["task"] for e in await events(db_pool, task.task_id)]
    done = [e["bytes_done"] for e in history]
    assert done == sorted(done)
    second = [e for e in history if e["attempt"] == 2]
    assert second[0]["status"] == "running" and second[0]["bytes_done"] >= stored
    shown = [e["progress"] for e in history if e["progress"] is not None]
    assert shown == sorted(shown) and shown[-1] == 100
    assert await stored_keys(s3, bucket, task.prefix) == [row["object_key"]]
    assert await open_uploads(s3, bucket, task.prefix) == []
    assert not await db_pool.fetchval(
        "SELECT count(*) FROM media.task_uploads WHERE task_id = $1", task.task_id
    )
    await remove_stored(s3, bucket, task)


async def test_a_playlist_changed_between_attempts_is_stored_again_from_its_first_segment(
    worker: Worker,
    submit: Submit,
    origin: SegmentOrigin,
    db_pool: asyncpg.Pool,
    s3: Any,
) -> None:
    bucket = worker.settings.s3_bucket
    first = (origin.root / "a.m3u8").read_text()
    replaced = (origin.root / "b.m3u8").read_text()
    origin.playlists["/live.m3u8"] = first

    async def replace_playlist() -> None:
        # The first attempt stops at a4; by the next, the playlist lists other segments.
        origin.playlists["/live.m3u8"] = replaced

    origin.refuse["/a4.m4s"] = 1
    origin.on_refused = replace_playlist
    task = await submit(origin.url("live.m3u8"))
    row = await finished(db_pool, task.task_id)
    assert (row["status"], row["attempt"]) == ("succeeded", 2), row["error_message"]
    new = concatenation(origin.root, listed_files(origin.root / "b.m3u8"))
    assert row["result_sha256"] == hashlib.sha256(new).hexdigest()
    assert await stored_bytes(s3, bucket, row) == new  # wholly the new stream, no old byte
    for name in listed_files(origin.root / "b.m3u8"):
        assert origin.fetched(name) == [None]
    assert await stored_keys(s3, bucket, task.prefix) == [row["object_key"]]
    assert await open_uploads(s3, bucket, task.prefix) == []
    await remove_stored(s3, bucket, task)


async def test_a_worker_killed_mid_stream_is_taken_over_at_the_segment_its_parts_end_in(
    infra: Any,
    origin: SegmentOrigin,
    db_pool: asyncpg.Pool,
    channel: AbstractChannel,
    s3: Any,
    tmp_path: Path,
) -> None:
    doomed = worker_settings(infra)
    survivor = worker_settings(infra, amqp_namespace=doomed.amqp_namespace)
    topology = Topology(doomed.amqp_namespace)
    origin.pause = 0.1  # about 3 s a segment per connection: time to act mid-stream
    names = listed_files(origin.root / "a.m3u8")
    whole = concatenation(origin.root, names)

    async with own_namespace(infra, db_pool, topology):
        async with worker_process(doomed, tmp_path / "doomed.log") as process:
            task = await create_task(db_pool, channel, topology, origin.url("a.m3u8"))
            await eventually(parts_recorded(db_pool, task.task_id, 2))
            async with running(survivor, asyncio.Event()):
                os.killpg(process.pid, signal.SIGKILL)  # no shutdown, no abort: a dead node
                process.wait()
                row = await finished(db_pool, task.task_id)
        assert (row["status"], row["attempt"]) == ("succeeded", 2), row["error_message"]
        assert row["result_sha256"] == hashlib.sha256(whole).hexdigest()
        # The survivor asks for the segment the stored parts end in, from inside it; none
        # before it again.
        at, stored = resumed_from(origin, names)
        assert stored >= 2 * doomed.upload_part_bytes
        for name in names[1:at]:
            assert origin.fetched(name) == [None]
        history = [e["task"] for e in await events(db_pool, task.task_id)]
        done = [e["bytes_done"] for e in history]
        assert done == sorted(done)
        assert next(e for e in history if e["attempt"] == 2)["bytes_done"] >= stored
        assert await ledger(db_pool, task.task_id) == [("charge", -TASK_COST)]
        assert await stored_keys(s3, doomed.s3_bucket, task.prefix) == [f"{task.prefix}1"]
        assert await open_uploads(s3, doomed.s3_bucket, task.prefix) == []
    await remove_stored(s3, doomed.s3_bucket, task)
