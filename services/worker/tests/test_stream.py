"""The download→multipart pipeline against an in-memory S3 (see ``FakeS3`` in conftest), and
the settings that shape its parts."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import ValidationError

from mediaflow_worker import multipart, stream
from mediaflow_worker.errors import Retry, TaskFailure
from mediaflow_worker.settings import WorkerSettings
from mediaflow_worker.stream import StreamResult, next_part_size, stream_to_s3

MIB = 1024 * 1024
FakeS3 = Any  # conftest.FakeS3; conftest modules cannot be imported under importlib mode
MakeMedia = Callable[[int], bytes]
CHUNK = 256 * 1024
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"


async def chunked(
    data: bytes, chunk: int = CHUNK, counter: list[int] | None = None
) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        piece = data[start : start + chunk]
        if counter is not None:
            counter[0] += len(piece)
        yield piece


async def no_progress(_: int) -> None:
    return None


async def until_quiet(progress: Callable[[], object], turns: int = 50) -> None:
    """Let every other task run until ``progress()`` stays the same for ``turns`` turns of the
    event loop: the store is then waiting on something the test holds, not on time."""
    last, unchanged = progress(), 0
    while unchanged < turns:
        await asyncio.sleep(0)
        now = progress()
        unchanged = unchanged + 1 if now == last else 0
        last = now


async def store(s3: object, chunks: AsyncIterator[bytes], **overrides: object) -> StreamResult:
    options: dict[str, object] = {
        "s3": s3,
        "bucket": "media",
        "key": "tasks/u/t",
        "part_size": 5 * MIB,
        "parts_in_flight": 2,
        "max_bytes": 64 * MIB,
        "on_progress": no_progress,
    } | overrides
    return await stream_to_s3(chunks, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("known_length", [True, False])
async def test_a_source_is_stored_whole_with_its_hash_and_type(
    fake_s3: FakeS3, make_mp4: MakeMedia, known_length: bool
) -> None:
    data = make_mp4(23 * MIB + 12345)
    result = await store(fake_s3, chunked(data), expected_size=len(data) if known_length else None)
    assert result == StreamResult(len(data), hashlib.sha256(data).hexdigest(), "video/mp4")
    stored = fake_s3.objects["tasks/u/t"]
    assert stored["body"] == data
    assert stored["content_type"] == "video/mp4"
    assert stored["metadata"] == {"sha256": result.sha256}
    assert fake_s3.part_sizes.count(5 * MIB) == 4
    assert len(fake_s3.part_sizes) == 5
    assert not fake_s3.uploads
    assert not fake_s3.aborted


async def test_progress_is_reported_as_bytes_pass(fake_s3: FakeS3, make_mp4: MakeMedia) -> None:
    data = make_mp4(3 * MIB)
    seen: list[int] = []

    async def record(done: int) -> None:
        seen.append(done)

    await store(fake_s3, chunked(data), on_progress=record)
    assert seen == sorted(seen)
    assert seen[-1] == len(data)
    assert len(seen) == 12


async def test_a_tiny_source_is_a_single_part(fake_s3: FakeS3) -> None:
    result = await store(fake_s3, chunked(PNG))
    assert result.content_type == "image/png"
    assert result.size == len(PNG)
    assert fake_s3.part_sizes == [len(PNG)]
    assert fake_s3.objects["tasks/u/t"]["body"] == PNG


async def test_a_source_ending_on_a_part_boundary_has_no_empty_last_part(
    fake_s3: FakeS3, make_mp4: MakeMedia
) -> None:
    data = make_mp4(10 * MIB)
    await store(fake_s3, chunked(data))
    assert fake_s3.part_sizes == [5 * MIB, 5 * MIB]


@pytest.mark.parametrize("body", [b"", b"<!doctype html>" + b"<p>hello</p>" * 1000])
async def test_non_media_is_refused_before_anything_is_stored(fake_s3: FakeS3, body: bytes) -> None:
    with pytest.raises(TaskFailure) as caught:
        await store(fake_s3, chunked(body))
    assert caught.value.code == "not_media"
    assert fake_s3.created == 0
    assert not fake_s3.objects


async def test_more_than_max_bytes_is_too_large_and_aborted(
    fake_s3: FakeS3, make_mp4: MakeMedia
) -> None:
    with pytest.raises(TaskFailure) as caught:
        await store(fake_s3, chunked(make_mp4(12 * MIB)), max_bytes=11 * MIB)
    assert caught.value.code == "too_large"
    assert fake_s3.created == 1
    assert len(fake_s3.aborted) == 1
    assert not fake_s3.uploads
    assert not fake_s3.objects


async def test_unknown_length_at_most_parts_in_flight_and_reading_waits_for_a_free_slot(
    fake_s3: FakeS3, make_mp4: MakeMedia
) -> None:
    fake_s3.part_gate = asyncio.Event()
    data = make_mp4(40 * MIB)
    read = [0]
    job = asyncio.create_task(store(fake_s3, chunked(data, counter=read), parts_in_flight=3))
    await until_quiet(lambda: (read[0], fake_s3.in_flight))
    # Three buffered parts uploading take every slot: no fourth is filled, nothing more read.
    assert fake_s3.in_flight == 3
    assert read[0] <= 5 * MIB * 3 + CHUNK
    fake_s3.part_gate.set()
    result = await job
    assert result.size == len(data)
    assert fake_s3.max_in_flight == 3


async def test_known_length_parts_are_passed_through_a_few_chunks_at_a_time(
    fake_s3: FakeS3, make_mp4: MakeMedia
) -> None:
    fake_s3.part_gate = asyncio.Event()
    data = make_mp4(40 * MIB)
    read = [0]
    job = asyncio.create_task(
        store(fake_s3, chunked(data, counter=read), parts_in_flight=3, expected_size=len(data))
    )
    await until_quiet(lambda: (read[0], fake_s3.in_flight))
    # The store takes nothing yet: the source is read no further than the part's short queue.
    assert fake_s3.in_flight == 1
    assert read[0] <= CHUNK * (multipart.QUEUED_CHUNKS + 2)
    fake_s3.part_gate.set()
    result = await job
    assert result == StreamResult(len(data), hashlib.sha256(data).hexdigest(), "video/mp4")
    assert fake_s3.part_sizes == [5 * MIB] * 8
    assert fake_s3.objects["tasks/u/t"]["body"] == data


@pytest.mark.parametrize("announced", [-1, +1])
async def test_a_source_sending_other_than_its_announced_length_is_retried_and_aborted(
    fake_s3: FakeS3, make_mp4: MakeMedia, announced: int
) -> None:
    data = make_mp4(12 * MIB)
    with pytest.raises(Retry) as caught:
        await store(fake_s3, chunked(data), expected_size=len(data) + announced)
    assert caught.value.code == "source_unreachable"
    assert len(fake_s3.aborted) == 1
    assert not fake_s3.uploads
    assert not fake_s3.objects


@pytest.mark.parametrize("known_length", [True, False])
async def test_a_failed_part_aborts_the_upload(
    fake_s3: FakeS3, make_mp4: MakeMedia, known_length: bool
) -> None:
    fake_s3.fail_part = 3
    data = make_mp4(30 * MIB)
    with pytest.raises(TaskFailure) as caught:
        await store(fake_s3, chunked(data), expected_size=len(data) if known_length else None)
    assert caught.value.code == "storage_error"
    assert len(fake_s3.aborted) == 1
    assert not fake_s3.uploads
    assert not fake_s3.objects


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (("SlowDown", 503), True),
        (("ServiceUnavailable", 503), True),
        (("InternalError", 500), True),
        (("RequestTimeout", 400), True),
        (("TooManyRequests", 429), True),
        (("AccessDenied", 403), False),
        (("NoSuchBucket", 404), False),
        (("NoSuchUpload", 404), False),
    ],
)
async def test_storage_failures_are_transient_only_when_the_store_is_busy_or_broken(
    fake_s3: FakeS3, make_mp4: MakeMedia, error: tuple[str, int], transient: bool
) -> None:
    fake_s3.fail_part, fake_s3.fail_part_with = 2, error
    with pytest.raises(TaskFailure) as caught:
        await store(fake_s3, chunked(make_mp4(12 * MIB)))
    assert caught.value.code == "storage_error"
    assert isinstance(caught.value, Retry) is transient
    assert len(fake_s3.aborted) == 1


async def test_a_failing_source_aborts_the_upload(fake_s3: FakeS3, make_mp4: MakeMedia) -> None:
    async def breaks_off() -> AsyncIterator[bytes]:
        async for piece in chunked(make_mp4(12 * MIB)):
            yield piece
        raise TaskFailure("source_unreachable", "gone")

    with pytest.raises(TaskFailure) as caught:
        await store(fake_s3, breaks_off())
    assert caught.value.code == "source_unreachable"
    assert len(fake_s3.aborted) == 1
    assert not fake_s3.uploads
    assert not fake_s3.objects


async def test_a_failure_after_completion_deletes_the_object(
    fake_s3: FakeS3, make_mp4: MakeMedia
) -> None:
    fake_s3.fail_copy = True
    with pytest.raises(TaskFailure) as caught:
        await store(fake_s3, chunked(make_mp4(6 * MIB)))
    assert caught.value.code == "storage_error"
    assert not fake_s3.uploads
    assert not fake_s3.objects


async def test_an_error_in_the_progress_callback_aborts_the_upload(
    fake_s3: FakeS3, make_mp4: MakeMedia
) -> None:
    class Withdrawn(Exception):
        pass

    async def withdraw(done: int) -> None:
        if done > 7 * MIB:
            raise Withdrawn

    with pytest.raises(Withdrawn):
        await store(fake_s3, chunked(make_mp4(20 * MIB)), on_progress=withdraw)
    assert len(fake_s3.aborted) == 1
    assert not fake_s3.uploads
    assert not fake_s3.objects


async def test_cancellation_aborts_the_upload_after_parts_in_flight_stop(
    fake_s3: FakeS3, make_mp4: MakeMedia
) -> None:
    fake_s3.part_gate = asyncio.Event()
    job = asyncio.create_task(store(fake_s3, chunked(make_mp4(30 * MIB))))
    async with fake_s3.parts_started:
        await fake_s3.parts_started.wait_for(lambda: fake_s3.in_flight == 2)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert fake_s3.in_flight == 0
    assert len(fake_s3.aborted) == 1
    assert not fake_s3.uploads
    assert not fake_s3.objects


def test_part_size_grows_so_no_upload_needs_more_than_10000_parts() -> None:
    assert next_part_size(8 * MIB, 1024 * MIB, 0, 0) == 8 * MIB
    assert next_part_size(8 * MIB, 4096 * MIB, 0, 0) == 8 * MIB
    grown = next_part_size(8 * MIB, 200 * 1024 * MIB, 0, 0)  # 200 GiB
    assert grown == 21 * MIB
    assert grown * 10_000 >= 200 * 1024 * MIB
    # Later parts still fit the rest in the parts left.
    assert next_part_size(5 * MIB, 100 * MIB, 90 * MIB, 9_999) == 10 * MIB
    with pytest.raises(TaskFailure):
        next_part_size(5 * MIB, 100 * MIB, 99 * MIB, 10_000)


@pytest.mark.parametrize("known_size", [True, False])
async def test_the_pipeline_grows_parts_to_stay_within_the_part_limit(
    fake_s3: FakeS3, make_mp4: MakeMedia, monkeypatch: pytest.MonkeyPatch, known_size: bool
) -> None:
    monkeypatch.setattr(stream, "MAX_PARTS", 4)
    data = make_mp4(30 * MIB)
    expected = len(data) if known_size else None
    # Unknown size: the budget is max_bytes, so parts are sized for it.
    result = await store(fake_s3, chunked(data), expected_size=expected, max_bytes=32 * MIB)
    assert result.size == len(data)
    assert len(fake_s3.part_sizes) <= 4
    assert fake_s3.objects["tasks/u/t"]["body"] == data


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("upload_part_bytes", 5 * MIB, "UPLOAD_PART_BYTES must be at least 8388608 (8 MiB)"),
        ("upload_parts_in_flight", 5, "less than or equal to 4"),
        ("upload_parts_in_flight", 0, "greater than or equal to 1"),
    ],
)
def test_parts_under_8_mib_or_more_than_4_in_flight_stop_the_worker_at_start(
    setting: str, value: int, says: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        WorkerSettings(
            service_secret="x" * 32,
            s3_access_key_id="key",
            s3_secret_access_key="secret",
            **{setting: value},
        )
    assert says in str(caught.value)


def test_the_default_parts_are_8_mib_at_most_4_in_flight() -> None:
    fields = WorkerSettings.model_fields
    assert fields["upload_part_bytes"].default >= 8 * MIB
    assert 1 <= fields["upload_parts_in_flight"].default <= 4
