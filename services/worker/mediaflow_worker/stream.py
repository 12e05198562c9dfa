"""Download and upload as one pipeline: chunks in, S3 multipart parts out.

A source of known length (Content-Length) is passed through: every part's size is known
before its first byte arrives, so each part's request starts with its length and takes the
source's chunks as they come, through a queue of a few chunks; a job holds about 1 MiB
whatever the part size. A source of unknown length is buffered: one part is filled while
others upload, and filling a new part waits for a free slot, so a job holds at most
``part_size * parts_in_flight``. Either way at most ``parts_in_flight`` parts are in flight
(being sent or awaiting the store's answer), and the SHA-256 is computed as bytes pass.
Every part carries the configured checksum, which the store verifies (``mediaflow_libs.s3``;
a passed-through part has it in a trailer).
Whatever goes wrong, including cancellation, the multipart upload is aborted (or the
finished object deleted), so no orphan parts stay behind.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from mediaflow_libs.s3 import MAX_COPY_BYTES
from mediaflow_libs.settings import MIB
from mediaflow_worker.errors import Retry, TaskFailure
from mediaflow_worker.journal import Continuation, Journal
from mediaflow_worker.lease import LeaseLost
from mediaflow_worker.multipart import BufferedPart, MultipartUpload, Part, PassedPart
from mediaflow_worker.resume import Restarted
from mediaflow_worker.sniff import SNIFF_BYTES, sniff_media_type

log = structlog.get_logger(__name__)

MAX_PARTS = 10_000  # S3's limit on parts per multipart upload

ProgressCallback = Callable[[int], Awaitable[None]]


@dataclass(frozen=True)
class StreamResult:
    size: int
    sha256: str
    content_type: str


def next_part_size(base: int, budget: int, offset: int, parts_done: int) -> int:
    """Size of the next part: ``base``, grown (in whole MiB) when ``budget`` bytes would not
    fit in the parts left. ``budget`` is the source's known size, or the most we accept."""
    parts_left = MAX_PARTS - parts_done
    if parts_left <= 0:
        raise TaskFailure("too_large", f"The media needs more than {MAX_PARTS} upload parts.")
    needed = -(-(budget - offset) // parts_left)  # ceiling division
    return max(base, -(-needed // MIB) * MIB)


def _media_type(head: bytes) -> str:
    content_type = sniff_media_type(head)
    if content_type is None:
        raise TaskFailure("not_media", "The source is not a video, audio or image file we accept.")
    return content_type


class _Restart(Exception):
    def __init__(self, size: int | None) -> None:
        super().__init__(size)
        self.size = size


async def stream_to_s3(
    chunks: AsyncIterator[bytes],
    *,
    s3: Any,
    bucket: str,
    key: str,
    part_size: int,
    parts_in_flight: int,
    max_bytes: int,
    on_progress: ProgressCallback,
    expected_size: int | None = None,
    copy_threshold: int = MAX_COPY_BYTES,
    copy_part_bytes: int = MAX_COPY_BYTES,
    journal: Journal | None = None,
    continuation: Continuation | None = None,
    content_type: str | None = None,
) -> StreamResult:
    """Store ``chunks`` as the object ``key``; ``on_progress(bytes_so_far)`` runs after each
    chunk. With ``expected_size`` (the source's announced length) parts are passed through,
    without it buffered (see the module's doc). Raises :class:`TaskFailure` (``not_media``,
    ``too_large``, ``storage_error``, ``source_unreachable`` when the source sends other than
    ``expected_size`` bytes) or whatever ``chunks`` or ``on_progress`` raise, after
    discarding the upload. The finished object gets its SHA-256 in its metadata by a
    self-copy, a multipart one (parts of ``copy_part_bytes``) above ``copy_threshold``.

    A :class:`~mediaflow_worker.resume.Restarted` chunk (the source read again from its
    first byte) aborts what was stored and starts a new upload with what follows; progress
    reported never goes back meanwhile.

    With ``journal`` the upload and each part are recorded, and a transient failure (a
    :class:`Retry`, a lost lease, cancellation) leaves the upload for the next attempt;
    with ``continuation`` the upload recorded by an earlier attempt goes on, ``chunks``
    starting at its ``offset``. ``content_type`` is what the object is stored as when its
    first bytes do not say it all (they must still be media)."""
    progress = _MonotonicProgress(on_progress)
    while True:
        upload = MultipartUpload(
            s3,
            bucket,
            key,
            copy_threshold=copy_threshold,
            copy_part_bytes=copy_part_bytes,
            journal=journal,
        )
        streaming = _Streaming(
            upload,
            part_size=part_size,
            parts_in_flight=parts_in_flight,
            max_bytes=max_bytes,
            on_progress=progress.report,
            expected_size=expected_size,
            continuation=continuation,
            content_type=content_type,
        )
        try:
            return await streaming.run(chunks)
        except _Restart as restart:
            log.info("stream.restarted", key=key, size=restart.size)
            expected_size, continuation = restart.size, None


@dataclass
class _MonotonicProgress:
    """Passes progress on only when it grows: a restarted source counts from zero again."""

    on_progress: ProgressCallback
    shown: int = 0

    async def report(self, done: int) -> None:
        if done > self.shown:
            self.shown = done
            await self.on_progress(done)


class _Streaming:
    """One pass over the source into one multipart upload.

    Part ``n`` covers the object's bytes from ``parts[n].first``; parts are numbered from 1
    (or from after a continued upload's last part) in the order their bytes arrive."""

    def __init__(
        self,
        upload: MultipartUpload,
        *,
        part_size: int,
        parts_in_flight: int,
        max_bytes: int,
        on_progress: ProgressCallback,
        expected_size: int | None,
        continuation: Continuation | None,
        content_type: str | None = None,
    ) -> None:
        self.upload = upload
        self.part_size = part_size
        self.max_bytes = max_bytes
        self.on_progress = on_progress
        self.expected_size = expected_size
        self.continuation = continuation
        self.content_type = content_type
        self.budget = min(expected_size, max_bytes) if expected_size is not None else max_bytes
        self.slots = asyncio.Semaphore(parts_in_flight)
        self.digest = hashlib.sha256()
        self.head = b""
        self.held: list[bytes] = []  # chunks read before the media type is known
        self.size = 0  # bytes read from the source (and those a continuation stored)
        self.fed = 0  # bytes handed to parts
        self.last_number = 0  # of the newest part
        self.part: Part | None = None  # the part being filled
        self._uploads: asyncio.TaskGroup | None = None
        if continuation is not None:
            upload.continue_from(continuation)
            self.size = self.fed = continuation.offset
            self.last_number = len(continuation.parts)

    async def run(self, chunks: AsyncIterator[bytes]) -> StreamResult:
        upload = self.upload
        try:
            try:
                async with asyncio.TaskGroup() as self._uploads:
                    await self._read(chunks)
            except BaseExceptionGroup as errors:
                # One job, one failure: the first is the cause, the others were cancelled by it.
                raise errors.exceptions[0] from None
            whole = self.continuation is None  # else the first bytes were hashed by another attempt
            sha256 = self.digest.hexdigest() if whole else None
            sha256 = await upload.complete(self.size, upload.content_type, sha256)
        except BaseException as exc:
            if upload.journal is not None and upload.upload_id is not None and _transient(exc):
                log.info("stream.upload_kept", key=upload.key, parts=len(upload.parts))
            else:
                await asyncio.shield(upload.discard())
            raise
        return StreamResult(size=self.size, sha256=sha256, content_type=upload.content_type)

    async def _read(self, chunks: AsyncIterator[bytes]) -> None:
        async for chunk in chunks:
            if isinstance(chunk, Restarted):
                raise _Restart(chunk.size)
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise TaskFailure(
                    "too_large", f"The media is larger than the limit of {self.max_bytes} bytes."
                )
            self.digest.update(chunk)
            if self.upload.upload_id is None:
                self.head += chunk[: SNIFF_BYTES - len(self.head)]
                self.held.append(chunk)
                if len(self.head) >= SNIFF_BYTES:
                    await self._begin()
            else:
                await self._feed(chunk)
            await self.on_progress(self.size)
        if self.upload.upload_id is None:
            # A short source (fewer bytes than SNIFF_BYTES) is sniffed as it is.
            await self._begin()
        part = self.part
        if part is not None:
            if part.passed_through:
                raise _source_broke_off("fewer")
            # The last, partly filled part; a source smaller than one part is just this.
            part.size = part.filled
            self._send(part)

    async def _begin(self) -> None:
        """Start the upload as the sniffed type and pass on what was held."""
        sniffed = _media_type(self.head)
        await self.upload.start(self.content_type or sniffed)
        for early in self.held:
            await self._feed(early)
        self.held.clear()

    async def _feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            part = self.part if self.part is not None else await self._new_part()
            taken = min(len(view), part.size - part.filled)
            await part.add(view[:taken])
            self.fed += taken
            view = view[taken:]
            if part.filled == part.size:
                if not part.passed_through:
                    self._send(part)
                self.part = None

    async def _new_part(self) -> Part:
        # Waiting for a free slot before taking more bytes is what bounds memory.
        await self.slots.acquire()
        expected = self.expected_size
        if expected is not None and self.fed >= expected:
            raise _source_broke_off("more")
        target = next_part_size(self.part_size, self.budget, self.fed, self.last_number)
        self.last_number += 1
        part: Part
        if expected is None:
            part = BufferedPart(self.last_number, self.fed, target)
        else:
            part = PassedPart(self.last_number, self.fed, min(target, expected - self.fed))
            self._send(part)  # its request starts now and takes the bytes as they come
        self.part = part
        return part

    def _send(self, part: Part) -> None:
        assert self._uploads is not None
        self._uploads.create_task(self.upload.upload_part(part, self.slots))


def _transient(exc: BaseException) -> bool:
    """Whether another attempt will take the task on: then its upload is worth keeping (a
    lost lease means another job holds the task, and may be continuing this very upload)."""
    return isinstance(exc, Retry | LeaseLost | asyncio.CancelledError)


def _source_broke_off(than: str) -> Retry:
    return Retry("source_unreachable", f"The source sent {than} bytes than it announced.")
