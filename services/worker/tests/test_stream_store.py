"""The pipeline against the real SeaweedFS through the shared S3 client: parts passed through
with their checksums, and the self-copy that sets the SHA-256 done with UploadPartCopy once
the object passes S3_COPY_THRESHOLD_BYTES (lowered here through the environment)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from mediaflow_libs.s3 import ensure_bucket, open_s3
from mediaflow_worker.settings import WorkerSettings
from mediaflow_worker.stream import stream_to_s3

MIB = 1024 * 1024


async def chunked(data: bytes, chunk: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


async def no_progress(_: int) -> None:
    return None


async def test_a_large_upload_gets_its_sha256_by_a_multipart_self_copy(
    infra: Any, make_mp4: Callable[[int], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3_COPY_THRESHOLD_BYTES", str(5 * MIB))
    monkeypatch.setenv("COPY_PART_BYTES", str(5 * MIB))
    settings = WorkerSettings(**infra.settings_kwargs())
    data = make_mp4(17 * MIB + 99)
    key = f"stream-test/{secrets.token_hex(4)}"
    sent: list[str] = []
    async with open_s3(settings) as s3:
        await ensure_bucket(s3, settings.s3_bucket)
        s3.meta.events.register(
            "before-send.s3", lambda event_name, **_: sent.append(event_name.rsplit(".", 1)[-1])
        )
        result = await stream_to_s3(
            chunked(data),
            s3=s3,
            bucket=settings.s3_bucket,
            key=key,
            part_size=settings.upload_part_bytes,
            parts_in_flight=settings.upload_parts_in_flight,
            max_bytes=64 * MIB,
            on_progress=no_progress,
            expected_size=len(data),
            copy_threshold=settings.s3_copy_threshold_bytes,
            copy_part_bytes=settings.copy_part_bytes,
        )
        head = await s3.head_object(Bucket=settings.s3_bucket, Key=key)
        stored = await s3.get_object(Bucket=settings.s3_bucket, Key=key)
        async with stored["Body"] as body:
            assert await body.read() == data
        await s3.delete_object(Bucket=settings.s3_bucket, Key=key)
    sha256 = hashlib.sha256(data).hexdigest()
    assert result.sha256 == sha256
    assert (head["ContentLength"], head["Metadata"]) == (len(data), {"sha256": sha256})
    assert head["ContentType"] == "video/mp4"
    assert sent.count("UploadPart") == 3  # 8 + 8 + 1 MiB, passed through
    assert sent.count("UploadPartCopy") == 4  # 5 + 5 + 5 + 2 MiB
    assert "CopyObject" not in sent
