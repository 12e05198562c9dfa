"""Streaming sources as users paste them: HLS (MPEG-TS, fMP4, byte ranges, AES-128, master
playlists with an audio group), DASH with separate audio and video, the options, pages
naming a playlist, an extractor, and the failures that must never leave a file with a hole.
Sources are made with ffmpeg by the test session and served on 127.0.0.1; the worker runs
in-process against the real PostgreSQL, RabbitMQ and SeaweedFS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp import web
from yt_dlp.extractor.common import InfoExtractor

from devstack import stack
from mediaflow_libs import task_transitions, tasks
from mediaflow_libs.amqp import Topology
from mediaflow_worker import fetch
from mediaflow_worker.media import extractor
from mediaflow_worker.settings import WorkerSettings
from services.worker.tests.media_sources import (
    DURATION,
    LONG_DURATION,
    MediaOrigin,
    ffprobe,
    media_origin,
)
from services.worker.tests.support import (
    TASK_COST,
    Submit,
    Worker,
    at_least,
    counted,
    create_task,
    events,
    eventually,
    finished,
    jobs_counted,
    ledger,
    open_uploads,
    own_namespace,
    running,
    stored_keys,
    worker_settings,
)

__all__ = ["media_origin"]


async def stored_file(s3: Any, worker: Worker, row: asyncpg.Record, tmp_path: Path) -> Path:
    answer = await s3.get_object(Bucket=worker.settings.s3_bucket, Key=row["object_key"])
    async with answer["Body"] as body:
        data = await body.read()
    path = tmp_path / "stored"
    path.write_bytes(data)
    return path


def streams(probed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["codec_type"]: s for s in probed["streams"]}


async def succeeded(
    submit: Submit,
    db_pool: asyncpg.Pool,
    s3: Any,
    worker: Worker,
    tmp_path: Path,
    url: str,
    **options: str,
) -> tuple[asyncpg.Record, dict[str, Any]]:
    task = await submit(url, options=options or None)
    row = await finished(db_pool, task.task_id)
    assert row["status"] == "succeeded", (row["error_code"], row["error_message"])
    probed = ffprobe(await stored_file(s3, worker, row, tmp_path))
    await s3.delete_object(Bucket=worker.settings.s3_bucket, Key=row["object_key"])
    return row, probed


def near_duration(probed: dict[str, Any]) -> bool:
    return abs(float(probed["format"]["duration"]) - DURATION) < 0.5


@pytest.mark.parametrize("source", ["ts", "fmp4", "ranges", "aes"])
async def test_an_hls_playlist_becomes_one_file_with_its_video_and_audio(
    source: str,
    worker: Worker,
    submit: Submit,
    media_origin: MediaOrigin,
    db_pool: asyncpg.Pool,
    s3: Any,
    tmp_path: Path,
) -> None:
    tasks_before = counted("worker_media_tasks_total", kind="hls")
    segments_before = counted("worker_media_segments_total", kind="hls", outcome="fetched")
    row, probed = await succeeded(
        submit, db_pool, s3, worker, tmp_path, media_origin.url(f"{source}/index.m3u8")
    )
    assert counted("worker_media_tasks_total", kind="hls") == tasks_before + 1
    # Four one-second segments (and an init section for fMP4).
    fetched = counted("worker_media_segments_total", kind="hls", outcome="fetched")
    assert fetched - segments_before >= 4
    found = streams(probed)
    assert found["video"]["codec_name"] == "h264"
    assert found["video"]["height"] == 360
    assert found["audio"]["codec_name"] == "aac"
    assert near_duration(probed)
    assert row["result_content_type"] == "video/mp4"
    assert row["result_filename"] == "index.mp4"
    media = row["result_media"]
    assert (media["height"], media["video_codec"], media["audio_codec"]) == (360, "h264", "aac")
    assert abs(media["duration_seconds"] - DURATION) < 0.5


@pytest.mark.parametrize(
    ("quality", "height"), [(None, 360), ("240", 240), ("720", 360), ("144", 240)]
)
async def test_a_master_playlist_gives_the_variant_the_quality_asks_for_with_the_audio_group(
    quality: str | None,
    height: int,
    worker: Worker,
    submit: Submit,
    media_origin: MediaOrigin,
    db_pool: asyncpg.Pool,
    s3: Any,
    tmp_path: Path,
) -> None:
    options = {"quality": quality} if quality else {}
    _, probed = await succeeded(
        submit, db_pool, s3, worker, tmp_path, media_origin.url("master/master.m3u8"), **options
    )
    found = streams(probed)
    assert set(found) == {"video", "audio"}
    assert found["video"]["height"] == height
    assert near_duration(probed)


@pytest.mark.parametrize("layout", ["number", "time", "list", "base"])
async def test_dash_with_separate_audio_and_video_is_muxed_into_one_file(
    layout: str,
    worker: Worker,
    submit: Submit,
    media_origin: MediaOrigin,
    db_pool: asyncpg.Pool,
    s3: Any,
    tmp_path: Path,
) -> None:
    _, probed = await succeeded(
        submit, db_pool, s3, worker, tmp_path, media_origin.url(f"dash/{layout}/manifest.mpd")
    )
    found = streams(probed)
    assert (found["video"]["codec_name"], found["audio"]["codec_name"]) == ("h264", "aac")
    assert near_duration(probed)


@pytest.mark.parametrize(
    ("options", "content_type", "codec"),
    [
        ({"mode": "audio"}, "audio/mp4", "aac"),
        ({"mode": "audio", "audio_format": "mp3"}, "audio/mpeg", "mp3"),
        ({"mode": "audio", "audio_format": "opus"}, "audio/ogg", "opus"),
    ],
)
async def test_audio_mode_stores_the_audio_alone_reencoded_only_when_asked(
    options: dict[str, str],
    content_type: str,
    codec: str,
    worker: Worker,
    submit: Submit,
    media_origin: MediaOrigin,
    db_pool: asyncpg.Pool,
    s3: Any,
    tmp_path: Path,
) -> None:
    for url in (media_origin.url("master/master.m3u8"), media_origin.url("file.mp4")):
        row, probed = await succeeded(submit, db_pool, s3, worker, tmp_path, url, **options)
        found = streams(probed)
        assert set(found) == {"audio"}
        assert found["audio"]["codec_name"] == codec
        assert row["result_content_type"] == content_type
        assert near_duration(probed)


async def test_mute_mode_stores_the_video_alone(
    worker: Worker,
    submit: Submit,
    media_origin: MediaOrigin,
    db_pool: asyncpg.Pool,
    s3: Any,
    tmp_path: Path,
) -> None:
    for url in (media_origin.url("ts/index.m3u8"), media_origin.url("master/master.m3u8")):
        row, probed = await succeeded(submit, db_pool, s3, worker, tmp_path, url, mode="mute")
        found = streams(probed)
        assert set(found) == {"video"}
        assert found["video"]["height"] == 360
        assert row["result_media"]["audio_codec"] is None


async def test_audio_asked_of_a_silent_video_is_format_unavailable(
    worker: Worker, submit: Submit, media_origin: MediaOrigin, db_pool: asyncpg.Pool, s3: Any
) -> None:
    task = await submit(media_origin.url("silent/index.m3u8"), options={"mode": "audio"})
    row = await finished(db_pool, task.task_id)
    assert (row["status"], row["error_code"]) == ("failed", "format_unavailable")
    assert await stored_keys(s3, worker.settings.s3_bucket, task.prefix) == []
    assert await open_uploads(s3, worker.settings.s3_bucket, task.prefix) == []
    assert await ledger(db_pool, task.task_id) == [("charge", -TASK_COST), ("refund", TASK_COST)]


async def test_a_page_naming_a_master_playlist_is_followed_to_it(
    worker: Worker,
    submit: Submit,
    media_origin: MediaOrigin,
    db_pool: asyncpg.Pool,
    s3: Any,
    tmp_path: Path,
) -> None:
    page = media_origin.page(
        "pages/player.html",
        '<html><body><video controls><source src="/master/master.m3u8" '
        'type="application/x-mpegURL"></video></body></html>',
    )
    _, probed = await succeeded(submit, db_pool, s3, worker, tmp_path, page, quality="240")
    found = streams(probed)
    assert set(found) == {"video", "audio"}
    assert found["video"]["height"] == 240


# --- failures: never a file with a hole ------------------------------------------------


def playlist_with(origin: MediaOrigin, name: str, last_segment: str) -> str:
    """The TS playlist with its last segment replaced by ``last_segment`` (a URL)."""
    text = (origin.root / "ts" / "index.m3u8").read_text()
    lines = text.splitlines()
    segments = [i for i, line in enumerate(lines) if line.endswith(".ts")]
    for i in segments:
        lines[i] = origin.url(f"ts/{lines[i]}")
    lines[segments[-1]] = last_segment
    path = origin.root / "ts" / name
    path.write_text("\n".join(lines) + "\n")
    return origin.url(f"ts/{name}")


async def test_a_segment_on_a_refused_address_fails_the_task_and_is_never_connected_to(
    worker: Worker, submit: Submit, media_origin: MediaOrigin, db_pool: asyncpg.Pool, s3: Any
) -> None:
    connections: list[object] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer.get_extra_info("peername"))
        writer.close()

    port = stack.free_port()
    # 127.0.0.2 is not in the worker's allowed ranges (127.0.0.1/32 only).
    listener = await asyncio.start_server(accept, "127.0.0.2", port)
    async with listener:
        url = playlist_with(media_origin, "refused.m3u8", f"http://127.0.0.2:{port}/seg.ts")
        task = await submit(url)
        row = await finished(db_pool, task.task_id)
    assert (row["status"], row["error_code"]) == ("failed", "blocked_destination")
    assert connections == []
    assert await stored_keys(s3, worker.settings.s3_bucket, task.prefix) == []
    assert await open_uploads(s3, worker.settings.s3_bucket, task.prefix) == []


async def test_a_missing_segment_fails_the_task_instead_of_leaving_a_hole(
    worker: Worker, submit: Submit, media_origin: MediaOrigin, db_pool: asyncpg.Pool, s3: Any
) -> None:
    url = playlist_with(media_origin, "missing.m3u8", media_origin.url("ts/gone.ts"))
    failures = counted("worker_media_failures_total", kind="hls", code="source_http_error")
    failed_segments = counted("worker_media_segments_total", kind="hls", outcome="failed")
    task = await submit(url)
    row = await finished(db_pool, task.task_id)
    assert (row["status"], row["error_code"]) == ("failed", "source_http_error")
    assert counted("worker_media_segments_total", kind="hls", outcome="failed") > failed_segments
    assert (
        counted("worker_media_failures_total", kind="hls", code="source_http_error") == failures + 1
    )
    assert row["object_key"] is None
    assert await stored_keys(s3, worker.settings.s3_bucket, task.prefix) == []
    assert await open_uploads(s3, worker.settings.s3_bucket, task.prefix) == []


async def test_an_hls_task_reports_segments_handed_on_over_segments_known_as_its_progress(
    worker: Worker,
    submit: Submit,
    media_origin: MediaOrigin,
    db_pool: asyncpg.Pool,
    s3: Any,
    tmp_path: Path,
) -> None:
    # The last of the twelve segments comes a byte at a time (within the read timeout) until a
    # progress update has been recorded: the task is seen partway, whatever the machine's speed.
    last = f"/long/index{LONG_DURATION - 1}.ts"
    released = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        body = (media_origin.root / last.lstrip("/")).read_bytes()
        response = web.StreamResponse(headers={"Content-Length": str(len(body))})
        await response.prepare(request)
        sent = 0
        while not released.is_set() and sent < len(body) - 1:
            await response.write(body[sent : sent + 1])
            sent += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(released.wait(), 0.2)
        await response.write(body[sent:])
        return response

    media_origin.overrides[last] = held
    try:
        task = await submit(media_origin.url("long/index.m3u8"))

        async def partway() -> bool:
            history = await events(db_pool, task.task_id)
            return any(e["task"]["progress"] not in (None, 100) for e in history)

        await eventually(partway, within=20)
        released.set()
        row = await finished(db_pool, task.task_id)
    finally:
        released.set()
        del media_origin.overrides[last]
    assert row["status"] == "succeeded", (row["error_code"], row["error_message"])
    stored = (await stored_file(s3, worker, row, tmp_path)).stat().st_size
    await s3.delete_object(Bucket=worker.settings.s3_bucket, Key=row["object_key"])
    snapshots = [e["task"] for e in await events(db_pool, task.task_id)]
    updates = [t for t in snapshots if t["status"] == "running" and t["progress"] is not None]
    assert updates, "no progress while the segments were fetched"
    # The file's size is known only once it is made: no total, but a percent of segments.
    assert all(t["bytes_total"] is None for t in updates)
    assert all(0 <= t["progress"] < 100 for t in updates)
    progress = [t["progress"] for t in updates]
    assert progress == sorted(progress)
    done = [t["bytes_done"] for t in snapshots]
    assert done == sorted(done)
    assert (snapshots[-1]["progress"], snapshots[-1]["bytes_done"]) == (100, stored)
    assert row["result_size"] == stored


def children_named(parent: int, name: str) -> list[int]:
    """Processes called ``name`` whose parent is ``parent``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        command = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if command == name and ppid == parent:
            found.append(int(entry))
    return found


def ffmpeg_children() -> list[int]:
    """ffmpeg processes this process started that are still there (zombies included)."""
    return children_named(os.getpid(), "ffmpeg")


async def test_a_cancel_during_a_mux_is_noticed_within_two_seconds_and_ffmpeg_is_reaped(
    infra: Any,
    media_origin: MediaOrigin,
    db_pool: asyncpg.Pool,
    channel: AbstractChannel,
    s3: Any,
) -> None:
    stalled = asyncio.Event()
    hung_up = asyncio.Event()

    async def stalls(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000000"})
        await response.prepare(request)
        await response.write(b"\x47" * 188)
        stalled.set()
        try:
            for _ in range(600):  # silent for up to 30 s, until the worker hangs up
                if request.transport is None or request.transport.is_closing():
                    break
                await asyncio.sleep(0.05)
        finally:
            hung_up.set()
        return response

    media_origin.overrides["/ts/stalls.ts"] = stalls
    url = playlist_with(media_origin, "stalls.m3u8", media_origin.url("ts/stalls.ts"))
    defaults = {
        name: WorkerSettings.model_fields[name].default
        for name in ("lease_seconds", "lease_heartbeat_seconds", "fetch_read_timeout_seconds")
    }
    settings = worker_settings(infra, **defaults)
    async with (
        own_namespace(infra, db_pool, Topology(settings.amqp_namespace)),
        running(settings, asyncio.Event()) as worker,
    ):
        canceled = jobs_counted("canceled")
        task = await create_task(db_pool, channel, worker.topology, url)
        await asyncio.wait_for(stalled.wait(), 30)
        assert ffmpeg_children(), "ffmpeg is running the mux"
        async with db_pool.acquire() as con, con.transaction():
            assert await task_transitions.transition(
                con, worker.topology, task.task_id, tasks.CANCELED
            )
        started = time.monotonic()
        await eventually(lambda: at_least(lambda: jobs_counted("canceled"), canceled + 1), 5)
        assert time.monotonic() - started < 2.0
        assert ffmpeg_children() == []
        await asyncio.wait_for(hung_up.wait(), 2)
    assert await open_uploads(s3, settings.s3_bucket, task.prefix) == []
    assert await stored_keys(s3, settings.s3_bucket, task.prefix) == []


# --- an extractor, offline -------------------------------------------------------------


class FakePlatformIE(InfoExtractor):  # type: ignore[misc]
    """A platform as yt-dlp sees one: a watch page's id, an API answer naming the title and
    an HLS master playlist, formats from that playlist."""

    IE_NAME = "fakeplatform"
    _VALID_URL = r"http://127\.0\.0\.1:\d+/watch/(?P<id>\w+)"

    def _real_extract(self, url: str) -> dict[str, Any]:
        video_id = self._match_id(url)
        base = url.split("/watch/")[0]
        api = self._download_json(f"{base}/api/latest/{video_id}", video_id)
        formats = self._extract_m3u8_formats(f"{base}{api['hls']}", video_id, "mp4")
        return {
            "id": video_id,
            "title": api["title"],
            "duration": api["duration"],
            "formats": formats,
        }


@pytest.fixture
def fake_platform(media_origin: MediaOrigin) -> Any:
    (media_origin.root / "api").mkdir(exist_ok=True)
    (media_origin.root / "api" / "clip1.json").write_text(
        '{"title": "Été: a/b \\\\ clip?", "duration": 4, "hls": "/master/master.m3u8"}'
    )

    async def moved(request: web.Request) -> web.StreamResponse:
        # A redirect hop of the extractor's own: checked like the first.
        raise web.HTTPFound("/api/clip1.json")

    media_origin.overrides["/api/latest/clip1"] = moved
    media_origin.page("watch/clip1", '<html><body><div id="player"></div></body></html>')
    extractor.EXTRA_EXTRACTORS.append(FakePlatformIE)
    yield
    extractor.EXTRA_EXTRACTORS.remove(FakePlatformIE)
    del media_origin.overrides["/api/latest/clip1"]


async def test_an_extractor_finds_the_formats_and_every_request_passes_the_egress_checks(
    fake_platform: Any,
    worker: Worker,
    submit: Submit,
    media_origin: MediaOrigin,
    db_pool: asyncpg.Pool,
    s3: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[str] = []
    original: Callable[..., None] = fetch.check_url

    def recording(url: Any, allow: Any) -> None:
        checked.append(url.path_qs)
        original(url, allow)

    monkeypatch.setattr(fetch, "check_url", recording)
    seen_before = len(media_origin.seen)
    row, probed = await succeeded(
        submit, db_pool, s3, worker, tmp_path, media_origin.url("watch/clip1"), quality="240"
    )
    seen = media_origin.seen[seen_before:]
    # The watch page (a player, no media named), then the extractor's API call and its redirect.
    assert seen[:3] == ["/watch/clip1", "/api/latest/clip1", "/api/clip1.json"]
    assert any(path.endswith(".ts") for path in seen)
    # The origin saw nothing the egress checks did not see first.
    assert sorted(seen) == sorted(checked)
    assert streams(probed)["video"]["height"] == 240
    assert row["result_filename"] == "Été a b clip.mp4"
    assert row["result_media"]["title"] == "Été: a/b \\ clip?"


def gone(pid: int) -> bool:
    """Exited (a zombie left to init counts as exited: it runs nothing and is reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


async def test_a_worker_killed_mid_mux_leaves_no_ffmpeg_and_the_task_is_taken_over(
    infra: Any,
    media_origin: MediaOrigin,
    db_pool: asyncpg.Pool,
    channel: AbstractChannel,
    s3: Any,
    tmp_path: Path,
) -> None:
    from services.worker.tests.test_worker_takeover import worker_process

    stalled = asyncio.Event()
    requests: list[int] = []
    segment = (media_origin.root / "ts" / "index3.ts").read_bytes()

    async def stalls_once(request: web.Request) -> web.StreamResponse:
        requests.append(1)
        if len(requests) > 1:
            return web.Response(body=segment, content_type="video/mp2t")
        response = web.StreamResponse(headers={"Content-Length": str(len(segment))})
        await response.prepare(request)
        stalled.set()
        for _ in range(600):  # until the worker is gone
            if request.transport is None or request.transport.is_closing():
                break
            await asyncio.sleep(0.05)
        return response

    media_origin.overrides["/ts/once.ts"] = stalls_once
    url = playlist_with(media_origin, "once.m3u8", media_origin.url("ts/once.ts"))
    doomed = worker_settings(infra)
    survivor = worker_settings(infra, amqp_namespace=doomed.amqp_namespace)
    topology = Topology(doomed.amqp_namespace)
    async with own_namespace(infra, db_pool, topology):
        async with worker_process(doomed, tmp_path / "doomed.log") as process:
            task = await create_task(db_pool, channel, topology, url)
            await asyncio.wait_for(stalled.wait(), 30)
            ffmpeg = children_named(process.pid, "ffmpeg")
            assert len(ffmpeg) == 1, "the doomed worker is muxing"
            async with running(survivor, asyncio.Event()):
                os.kill(process.pid, signal.SIGKILL)  # the worker alone: ffmpeg is left
                process.wait()

                async def ffmpeg_gone() -> bool:
                    return gone(ffmpeg[0])

                # Its pipes closed with the worker: ffmpeg reads the end and exits.
                await eventually(ffmpeg_gone, within=10)
                row = await finished(db_pool, task.task_id)
        assert (row["status"], row["attempt"]) == ("succeeded", 2)
        assert await stored_keys(s3, doomed.s3_bucket, task.prefix) == [f"{task.prefix}2"]
        assert await open_uploads(s3, doomed.s3_bucket, task.prefix) == []
        assert await ledger(db_pool, task.task_id) == [("charge", -TASK_COST)]
        await s3.delete_object(Bucket=doomed.s3_bucket, Key=f"{task.prefix}2")
