"""An object's multipart upload and the parts that go into it, each with its number and
the offset of its first byte."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog

from mediaflow_libs.s3 import MAX_COPY_BYTES, StreamedBody, completed_part, copy_object
from mediaflow_worker.journal import Continuation, Journal, stored_sha256
from mediaflow_worker.storage import storage_call

log = structlog.get_logger(__name__)

# Chunks queued for a passed-through part: enough to keep its request busy while the source
# is read, few enough to stay small (fetch reads chunks of 256 KiB).
QUEUED_CHUNKS = 2

Body = io.BytesIO | StreamedBody


@dataclass
class MultipartUpload:
    """One object's multipart upload; created once the first bytes are known to be media, so
    a source refused for not being media never touches storage."""

    s3: Any
    bucket: str
    key: str
    upload_id: str | None = None
    copy_threshold: int = MAX_COPY_BYTES
    copy_part_bytes: int = MAX_COPY_BYTES
    content_type: str = ""
    completed: bool = False
    parts: dict[int, dict[str, Any]] = field(default_factory=dict)
    journal: Journal | None = None

    def continue_from(self, continuation: Continuation) -> None:
        self.upload_id = continuation.upload_id
        self.content_type = continuation.content_type
        self.parts = dict(continuation.parts)

    async def start(self, content_type: str) -> None:
        self.content_type = content_type
        response = await storage_call(
            self.s3.create_multipart_upload,
            Bucket=self.bucket,
            Key=self.key,
            ContentType=content_type,
        )
        self.upload_id = response["UploadId"]
        if self.journal is not None:
            await self.journal.started(self.key, self.upload_id, content_type)

    async def upload_part(self, part: BufferedPart | PassedPart, slots: asyncio.Semaphore) -> None:
        number, data = part.number, part.body()
        # A streamed body's length cannot be read off it: the request announces it.
        length = {"ContentLength": data.length} if isinstance(data, StreamedBody) else {}
        try:
            response = await storage_call(
                self.s3.upload_part,
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=data,
                **length,
            )
        finally:
            slots.release()
        self.parts[number] = completed_part(number, response)
        if self.journal is not None:
            last = part.first + part.size - 1
            await self.journal.part_done(number, self.parts[number], part.first, last)

    async def complete(self, size: int, content_type: str, sha256: str | None) -> str:
        """Complete the upload and set its SHA-256 (read back from the store when None:
        the bytes of a continued upload were not all hashed here); returns it."""
        parts = [self.parts[n] for n in sorted(self.parts)]
        await storage_call(
            self.s3.complete_multipart_upload,
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": parts},
        )
        self.completed = True
        if sha256 is None:
            sha256 = await stored_sha256(self.s3, self.bucket, self.key)
        # The hash is known only now; a self-copy that replaces the metadata is the one way
        # S3 offers to set it afterwards (server-side: no data passes through the worker).
        await storage_call(
            copy_object,
            client=self.s3,
            bucket=self.bucket,
            source=self.key,
            target=self.key,
            size=size,
            threshold=self.copy_threshold,
            part_bytes=self.copy_part_bytes,
            content_type=content_type,
            metadata={"sha256": sha256},
        )
        if self.journal is not None:
            await self.journal.finished()
        return sha256

    async def discard(self) -> None:
        """Abort the upload, or delete the object once complete; never raises, so the
        failure that brought us here is the one reported."""
        if self.journal is not None:
            await self.journal.finished()
        try:
            if self.completed:
                await self.s3.delete_object(Bucket=self.bucket, Key=self.key)
            elif self.upload_id is not None:
                await self.s3.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
                )
        except Exception as exc:
            log.warning(
                "stream.discard_failed", key=self.key, upload_id=self.upload_id, error=repr(exc)
            )


class BufferedPart:
    """A part of a source of unknown length: kept until full (or the source ends), then sent
    from memory, and tried again by the store client when the store is busy."""

    passed_through = False

    def __init__(self, number: int, first: int, size: int) -> None:
        self.number = number
        self.first = first  # offset of its first byte in the object
        self.size = size
        self._buffer = presized(size)

    @property
    def filled(self) -> int:
        return self._buffer.tell()

    async def add(self, view: memoryview) -> None:
        self._buffer.write(view)

    def body(self) -> Body:
        # A file object, not bytes: sent piecewise as the socket drains, never copied whole.
        self._buffer.truncate()
        self._buffer.seek(0)
        return self._buffer


class PassedPart:
    """A part of a source of known length: its request carries its length from the start
    and sends the source's chunks as they are added (a few queued at most)."""

    passed_through = True

    def __init__(self, number: int, first: int, size: int) -> None:
        self.number = number
        self.first = first
        self.size = size
        self.filled = 0
        self._queue: asyncio.Queue[memoryview] = asyncio.Queue(QUEUED_CHUNKS)

    async def add(self, view: memoryview) -> None:
        await self._queue.put(view)
        self.filled += len(view)

    async def _pieces(self) -> AsyncIterator[memoryview]:
        sent = 0
        while sent < self.size:
            piece = await self._queue.get()
            sent += len(piece)
            yield piece

    def body(self) -> Body:
        return StreamedBody(self._pieces(), self.size)


Part = BufferedPart | PassedPart


def presized(size: int) -> io.BytesIO:
    """A buffer with ``size`` bytes allocated at once: growing it chunk by chunk reallocates
    it dozens of times per part and fragments the heap (about 15 MiB more peak RSS in
    ``bench/worker_rss.py``)."""
    buffer = io.BytesIO()
    buffer.seek(size - 1)
    buffer.write(b"\0")
    buffer.seek(0)
    return buffer
