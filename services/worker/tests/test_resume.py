"""A direct file whose source breaks off mid-body, through the in-process worker against the
real PostgreSQL, RabbitMQ and SeaweedFS: continued with a range request within the attempt,
read again from its first byte when ranges are not honoured, and never stored as a mix of
two versions when the file is replaced between two requests; and the sweep that aborts the
multipart uploads no running task owns."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import struct
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp import web

from mediaflow_libs.amqp import Topology
from mediaflow_worker.media.plan import PROBE_BYTES
from mediaflow_worker.sweep import sweep_orphan_uploads
from services.worker.tests.media_sources import make_video
from services.worker.tests.support import (
    MIB,
    TASK_COST,
    Origin,
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

MakeMedia = Callable[[int], bytes]
WRITE_BYTES = 64 * 1024


@dataclass
class CuttingOrigin:
    """An HTTP origin on 127.0.0.1 that closes the connection after ``cut`` body bytes of
    its first answer. It honours ``Range`` (with ``If-Range``) only when ``ranges``; with
    ``replacement`` the file is replaced (new bytes, new ETag) after the first answer."""

    body: bytes
    cut: int
    ranges: bool = True
    replacement: bytes | None = None
    served: int = 0  # body bytes written, over all answers
    requests: list[dict[str, str]] = field(default_factory=list)
    version: int = 1
    port: int = 0
    pause: float = 0.0  # between writes: a slow source, to act mid-transfer
    redirect: str | None = None  # where answers after the first redirect to

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/media.mp4"

    @property
    def etag(self) -> str:
        return f'"v{self.version}"'

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")[1:]
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines if line)
            }
            self.requests.append(headers)
            first = len(self.requests) == 1
            if not first and self.replacement is not None and self.version == 1:
                self.body, self.version = self.replacement, 2
            if not first and self.redirect is not None:
                writer.write(
                    f"HTTP/1.1 302 Found\r\nLocation: {self.redirect}\r\n"
                    "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
                )
                return
            start, status = 0, "200 OK"
            wanted = headers.get("range", "")
            honoured = headers.get("if-range", self.etag) == self.etag
            if self.ranges and honoured and wanted.startswith("bytes=") and wanted.endswith("-"):
                start, status = int(wanted[6:-1]), "206 Partial Content"
            size = len(self.body)
            reply = [
                f"HTTP/1.1 {status}",
                "Content-Type: video/mp4",
                f"Content-Length: {size - start}",
                f"ETag: {self.etag}",
                "Connection: close",
            ]
            if self.ranges:
                reply.append("Accept-Ranges: bytes")
            if start:
                reply.append(f"Content-Range: bytes {start}-{size - 1}/{size}")
            writer.write(("\r\n".join(reply) + "\r\n\r\n").encode())
            end = start + self.cut if first else size
            for at in range(start, min(end, size), WRITE_BYTES):
                piece = self.body[at : min(at + WRITE_BYTES, end)]
                writer.write(piece)
                self.served += len(piece)
                await writer.drain()
                if self.pause:
                    await asyncio.sleep(self.pause)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def cutting() -> AsyncIterator[Callable[..., CuttingOrigin]]:
    servers: list[asyncio.Server] = []
    origins: list[CuttingOrigin] = []

    def make(body: bytes, cut: int, **options: Any) -> CuttingOrigin:
        origin = CuttingOrigin(body, cut, **options)
        origins.append(origin)
        return origin

    async def start() -> None:
        for origin in origins[len(servers) :]:
            server = await asyncio.start_server(origin.handle, "127.0.0.1", 0)
            origin.port = server.sockets[0].getsockname()[1]
            servers.append(server)

    make.start = start  # type: ignore[attr-defined]
    yield make
    for server in servers:
        server.close()
        await server.wait_closed()


async def started(cutting: Callable[..., CuttingOrigin], *args: Any, **kw: Any) -> CuttingOrigin:
    origin = cutting(*args, **kw)
    await cutting.start()  # type: ignore[attr-defined]
    return origin


async def test_a_source_that_breaks_off_is_continued_with_a_range_request(
    worker: Worker,
    submit: Submit,
    db_pool: asyncpg.Pool,
    s3: Any,
    make_mp4: MakeMedia,
    cutting: Callable[..., CuttingOrigin],
) -> None:
    media = make_mp4(20 * MIB + 321)
    origin = await started(cutting, media, cut=11 * MIB + 77)
    resumes = counted("worker_resumes_total", kind="in_attempt")
    task = await submit(origin.url)
    row = await finished(db_pool, task.task_id)

    assert row["status"] == "succeeded"
    assert row["attempt"] == 1
    assert row["result_sha256"] == hashlib.sha256(media).hexdigest()
    assert row["result_size"] == len(media)
    assert origin.served <= len(media) + worker.settings.upload_part_bytes
    # From the first byte not passed on: at most what was sent (the client may drop what it
    # had buffered when the connection broke).
    ranges = [r.get("range") for r in origin.requests]
    assert len(ranges) == 2 and ranges[0] is None
    assert ranges[1] is not None and ranges[1].startswith("bytes=") and ranges[1].endswith("-")
    assert 0 < int(ranges[1][6:-1]) <= 11 * MIB + 77
    assert origin.requests[1]["if-range"] == '"v1"'
    assert counted("worker_resumes_total", kind="in_attempt") == resumes + 1
    history = await events(db_pool, task.task_id)
    done = [e["task"]["bytes_done"] for e in history]
    assert done == sorted(done)  # bytes_done never goes back
    assert await ledger(db_pool, task.task_id) == [("charge", -TASK_COST)]
    assert await open_uploads(s3, worker.settings.s3_bucket, task.prefix) == []
    stored = await s3.get_object(Bucket=worker.settings.s3_bucket, Key=row["object_key"])
    async with stored["Body"] as body:
        assert await body.read() == media
    await remove_stored(s3, worker.settings.s3_bucket, task)


async def test_a_source_without_ranges_is_read_again_from_its_first_byte(
    worker: Worker,
    submit: Submit,
    db_pool: asyncpg.Pool,
    s3: Any,
    make_mp4: MakeMedia,
    cutting: Callable[..., CuttingOrigin],
) -> None:
    media = make_mp4(12 * MIB + 5)
    origin = await started(cutting, media, cut=9 * MIB, ranges=False)
    restarts = counted("worker_resumes_total", kind="restart")
    refetched = counted("worker_bytes_refetched_total")
    task = await submit(origin.url)
    row = await finished(db_pool, task.task_id)

    assert row["status"] == "succeeded"
    assert row["attempt"] == 1
    assert row["result_sha256"] == hashlib.sha256(media).hexdigest()
    assert len(origin.requests) == 2
    assert origin.served == len(media) + 9 * MIB
    assert counted("worker_resumes_total", kind="restart") == restarts + 1
    # What had been passed on to storage before the break, read again.
    assert 0 < counted("worker_bytes_refetched_total") - refetched <= 9 * MIB
    history = await events(db_pool, task.task_id)
    done = [e["task"]["bytes_done"] for e in history]
    assert done == sorted(done)
    assert await open_uploads(s3, worker.settings.s3_bucket, task.prefix) == []
    await remove_stored(s3, worker.settings.s3_bucket, task)


async def test_a_file_replaced_between_two_requests_is_stored_wholly_as_the_new_file(
    worker: Worker,
    submit: Submit,
    db_pool: asyncpg.Pool,
    s3: Any,
    make_mp4: MakeMedia,
    cutting: Callable[..., CuttingOrigin],
) -> None:
    old, new = make_mp4(18 * MIB), make_mp4(17 * MIB + 999)
    origin = await started(cutting, old, cut=10 * MIB, replacement=new)
    task = await submit(origin.url)
    row = await finished(db_pool, task.task_id)

    assert row["status"] == "succeeded"
    assert row["attempt"] == 1
    assert origin.requests[1]["if-range"] == '"v1"'  # the range was asked for, refused
    assert row["result_sha256"] == hashlib.sha256(new).hexdigest()
    assert row["result_size"] == len(new)
    stored = await s3.get_object(Bucket=worker.settings.s3_bucket, Key=row["object_key"])
    async with stored["Body"] as body:
        assert await body.read() == new
    assert await open_uploads(s3, worker.settings.s3_bucket, task.prefix) == []
    await remove_stored(s3, worker.settings.s3_bucket, task)


async def test_a_resumed_request_is_checked_like_the_first_one(
    worker: Worker,
    submit: Submit,
    db_pool: asyncpg.Pool,
    s3: Any,
    make_mp4: MakeMedia,
    cutting: Callable[..., CuttingOrigin],
) -> None:
    media = make_mp4(12 * MIB)
    # The continuation is redirected to the cloud metadata address: refused, not fetched.
    redirect = "http://169.254.169.254/latest/meta-data/"
    origin = await started(cutting, media, cut=9 * MIB, redirect=redirect)
    task = await submit(origin.url)
    row = await finished(db_pool, task.task_id)

    assert row["status"] == "failed"
    assert row["error_code"] == "blocked_destination"
    assert origin.requests[1]["range"].startswith("bytes=")
    assert await open_uploads(s3, worker.settings.s3_bucket, task.prefix) == []
    assert (
        await db_pool.fetchval(
            "SELECT count(*) FROM media.task_uploads WHERE task_id = $1", task.task_id
        )
        == 0
    )


async def test_the_sweep_aborts_uploads_no_running_task_owns(
    worker: Worker,
    submit: Submit,
    db_pool: asyncpg.Pool,
    s3: Any,
    make_mp4: MakeMedia,
    origin: Origin,
) -> None:
    bucket = worker.settings.s3_bucket
    media = make_mp4(2 * MIB)
    go_on = asyncio.Event()

    async def holding(request: web.Request) -> web.StreamResponse:
        # The first MiB (past the sniffed head, so the upload has begun), then a pause.
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = len(media)
        await response.prepare(request)
        await response.write(media[:MIB])
        await go_on.wait()
        await response.write(media[MIB:])
        return response

    user = str(uuid.uuid4())  # the sweep is kept to this user's keys: the store is shared
    mine = f"tasks/{user}/"
    running_task = await submit(origin.add(holding), user_id=user)

    async def upload_begun() -> bool:
        return bool(await open_uploads(s3, bucket, running_task.prefix))

    await eventually(upload_begun)
    orphan_key = f"{mine}{uuid.uuid4()}/1"
    orphan = await s3.create_multipart_upload(Bucket=bucket, Key=orphan_key)
    young_key = f"{mine}{uuid.uuid4()}/2"
    young = await s3.create_multipart_upload(Bucket=bucket, Key=young_key)

    # Nothing is old enough yet.
    assert await sweep_orphan_uploads(db_pool, s3, bucket, 3600, mine) == 0
    assert await sweep_orphan_uploads(db_pool, s3, bucket, 0, mine) == 2
    assert await open_uploads(s3, bucket, orphan_key) == []
    assert await open_uploads(s3, bucket, young_key) == []
    assert orphan["UploadId"] and young["UploadId"]
    # The running task's upload is its job's: kept, and the task finishes.
    assert len(await open_uploads(s3, bucket, running_task.prefix)) == 1
    go_on.set()
    row = await finished(db_pool, running_task.task_id)
    assert row["status"] == "succeeded"
    assert row["result_sha256"] == hashlib.sha256(media).hexdigest()
    await remove_stored(s3, bucket, running_task)


async def test_a_worker_killed_mid_transfer_is_continued_at_its_last_stored_part(
    infra: Any,
    db_pool: asyncpg.Pool,
    channel: AbstractChannel,
    s3: Any,
    cutting: Callable[..., CuttingOrigin],
    tmp_path: Path,
) -> None:
    doomed = worker_settings(infra)
    survivor = worker_settings(infra, amqp_namespace=doomed.amqp_namespace)
    topology = Topology(doomed.amqp_namespace)
    part = doomed.upload_part_bytes
    # A real video, its index first, grown to 40 MiB by a trailing free box: what the stored
    # file is must be probed from its start, which the continuing attempt does not store.
    clip = make_video("640x360", tmp_path, "clip.mp4", duration=3).read_bytes()
    padding = 40 * MIB + 4321 - len(clip)
    media = clip + struct.pack(">I4s", padding, b"free") + os.urandom(padding - 8)
    # 64 KiB every 5 ms: about 8 s for the whole file, and no cut.
    origin = await started(cutting, media, cut=len(media), pause=0.005)
    across = counted("worker_resumes_total", kind="across_attempts")
    refetched = counted("worker_bytes_refetched_total")

    async def two_parts_recorded() -> bool:
        recorded = await db_pool.fetchval(
            "SELECT count(*) FROM media.task_upload_parts WHERE task_id = $1", task.task_id
        )
        return bool(recorded >= 2)

    async with own_namespace(infra, db_pool, topology):
        async with worker_process(doomed, tmp_path / "doomed.log") as process:
            task = await create_task(db_pool, channel, topology, origin.url)
            await eventually(two_parts_recorded)
            async with running(survivor, asyncio.Event()):
                os.killpg(process.pid, signal.SIGKILL)  # no shutdown, no abort: a dead node
                process.wait()
                row = await finished(db_pool, task.task_id)

        assert row["status"] == "succeeded"
        assert row["attempt"] == 2
        assert row["result_sha256"] == hashlib.sha256(media).hexdigest()
        assert row["result_size"] == len(media)
        # What the file is, though the continuing attempt did not store its start.
        media_row = row["result_media"]
        assert (media_row["width"], media_row["height"]) == (640, 360)
        assert (media_row["video_codec"], media_row["audio_codec"]) == ("h264", "aac")
        assert abs(media_row["duration_seconds"] - 3) < 0.2
        # The next attempt opens the URL as every attempt does (what is it?), drops that
        # answer once it is the recorded file, and asks for the rest from a part boundary
        # past the first two parts.
        assert [r.get("range") is None for r in origin.requests] == [True, True, False]
        wanted = origin.requests[2]["range"]
        assert wanted.startswith("bytes=") and wanted.endswith("-")
        assert int(wanted[6:-1]) >= 2 * part and int(wanted[6:-1]) % part == 0
        assert origin.requests[2]["if-range"] == '"v1"'
        assert origin.served <= len(media) + 2 * part
        assert counted("worker_resumes_total", kind="across_attempts") == across + 1
        # What the dead worker showed past its stored parts is counted as fetched twice.
        shown = max(
            e["task"]["bytes_done"] or 0
            for e in await events(db_pool, task.task_id)
            if e["task"]["attempt"] == 1
        )
        # And its first MiB, read again to probe it.
        assert (
            counted("worker_bytes_refetched_total") - refetched
            == max(shown - int(wanted[6:-1]), 0) + PROBE_BYTES
        )
        # The events show the new attempt going on from where the bytes were.
        history = await events(db_pool, task.task_id)
        done = [e["task"]["bytes_done"] for e in history]
        assert done == sorted(done)
        second = [e["task"] for e in history if e["task"]["attempt"] == 2]
        assert second[0]["bytes_done"] >= 2 * part
        assert await ledger(db_pool, task.task_id) == [("charge", -TASK_COST)]
        assert await stored_keys(s3, doomed.s3_bucket, task.prefix) == [f"{task.prefix}1"]
        assert await open_uploads(s3, doomed.s3_bucket, task.prefix) == []
        assert not await db_pool.fetchval(
            "SELECT count(*) FROM media.task_uploads WHERE task_id = $1", task.task_id
        )
    await remove_stored(s3, doomed.s3_bucket, task)
