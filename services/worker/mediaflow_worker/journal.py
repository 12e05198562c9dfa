"""A task's multipart upload, recorded part by part so that another attempt (on this worker
or on the one that takes a dead worker's task over) continues at the last stored part.

Recorded only for what can be continued safely: a direct file of known size whose answer
has a validator (strong ETag, else Last-Modified) for ``If-Range``, or a segmented stream
stored as it is, whose validator is a fingerprint of its list of pieces. The record
(migrations 0011, 0015) holds the upload id and the source's validator; each completed part
adds its number, ETag, checksum and byte range, and for a segmented stream where the next
byte comes from (segment index, offset inside it). Another attempt confirms the parts with
``ListParts`` (what the store does not list, or lists with another ETag, is uploaded again)
and asks the source for the rest (``Range``, or the segments from the recorded one on); the
source's validator must be the recorded one.

The SHA-256 of a continued upload is computed by reading the completed object back from
the store (:func:`stored_sha256`): hashlib's state cannot be saved, and S3 cannot read the
parts of an upload in progress (README: "Resume").
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from botocore.exceptions import ClientError

from mediaflow_libs import db, tasks
from mediaflow_libs.s3 import delete_prefix

log = structlog.get_logger(__name__)

READ_BACK_BYTES = 1024 * 1024
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


@dataclass(frozen=True)
class Continuation:
    """Where a recorded upload stands, as the store confirms it."""

    object_key: str
    upload_id: str
    validator: str
    size: int | None  # None: a segmented stream, whose size is known once it is made
    content_type: str
    parts: dict[int, dict[str, Any]] = field(default_factory=dict)  # completed_part entries
    offset: int = 0  # bytes stored in parts 1..len(parts)
    # A segmented stream's next byte: the index of its segment, and the offset inside it.
    next_segment: tuple[int, int] | None = None


async def kept_bytes(con: db.Connection, task_id: str) -> tuple[int, int | None] | None:
    """(bytes in recorded parts from the first on, size or None) of the task's recorded
    upload."""
    row = await con.fetchrow(
        """SELECT u.size, coalesce(max(p.last_byte) + 1, 0) AS kept
           FROM media.task_uploads u LEFT JOIN media.task_upload_parts p USING (task_id)
           WHERE u.task_id = $1 GROUP BY u.size""",
        task_id,
    )
    if row is None:
        return None
    return int(row["kept"]), None if row["size"] is None else int(row["size"])


async def recorded_key(pool: asyncpg.Pool, task_id: str) -> str | None:
    async with pool.acquire() as con:
        key: str | None = await con.fetchval(
            "SELECT object_key FROM media.task_uploads WHERE task_id = $1", task_id
        )
    return key


async def confirmed(pool: asyncpg.Pool, s3: Any, bucket: str, task_id: str) -> Continuation | None:
    """The task's recorded upload, as far as ``ListParts`` confirms its parts in order from
    the first; None when nothing is recorded or nothing is confirmed."""
    async with pool.acquire() as con:
        upload = await con.fetchrow("SELECT * FROM media.task_uploads WHERE task_id = $1", task_id)
        rows = await con.fetch(
            """SELECT part_number, etag, checksum, first_byte, last_byte, next_segment,
                   next_segment_offset
               FROM media.task_upload_parts WHERE task_id = $1 ORDER BY part_number""",
            task_id,
        )
    if upload is None:
        return None
    listed: dict[int, str] = {}
    try:
        marker = 0
        while True:
            page = await s3.list_parts(
                Bucket=bucket,
                Key=upload["object_key"],
                UploadId=upload["upload_id"],
                PartNumberMarker=marker,
            )
            listed |= {p["PartNumber"]: p["ETag"] for p in page.get("Parts", [])}
            if not page.get("IsTruncated"):
                break
            marker = int(page["NextPartNumberMarker"])
    except ClientError as exc:
        log.info("journal.upload_gone", upload_id=upload["upload_id"], error=repr(exc))
        return None
    parts: dict[int, dict[str, Any]] = {}
    offset = 0
    next_segment: tuple[int, int] | None = None
    for row in rows:
        number = row["part_number"]
        if number != len(parts) + 1 or listed.get(number) != row["etag"]:
            break
        if row["first_byte"] != offset:
            break
        parts[number] = {"PartNumber": number, "ETag": row["etag"], **json.loads(row["checksum"])}
        offset = row["last_byte"] + 1
        if row["next_segment"] is not None:
            next_segment = (row["next_segment"], row["next_segment_offset"])
        else:
            next_segment = None
    if not parts:
        return None
    return Continuation(
        object_key=upload["object_key"],
        upload_id=upload["upload_id"],
        validator=upload["validator"],
        size=upload["size"],
        content_type=upload["content_type"],
        parts=parts,
        offset=offset,
        next_segment=next_segment,
    )


async def abandon(pool: asyncpg.Pool, s3: Any, bucket: str, task_id: str) -> None:
    """Abort the task's recorded upload (if any) and forget it; never raises."""
    try:
        async with pool.acquire() as con:
            row = await con.fetchrow(
                "DELETE FROM media.task_uploads WHERE task_id = $1 RETURNING object_key, upload_id",
                task_id,
            )
        if row is not None:
            await s3.abort_multipart_upload(
                Bucket=bucket, Key=row["object_key"], UploadId=row["upload_id"]
            )
    except Exception as exc:
        log.warning("journal.abandon_failed", task_id=task_id, error=repr(exc))


async def discard_task(
    pool: asyncpg.Pool, s3: Any, bucket: str, user_id: str, task_id: str
) -> None:
    """What a task given up on outside its job left in storage: its recorded upload and
    whatever its attempts left under its prefix (a worker killed mid-upload stores more than
    it records); never raises, the sweep of orphan uploads being the backstop."""
    await abandon(pool, s3, bucket, task_id)
    prefix = tasks.object_prefix(user_id, task_id)
    try:
        await delete_prefix(s3, bucket, prefix)
    except Exception as exc:
        log.warning("journal.leftovers_not_removed", prefix=prefix, error=repr(exc))


async def stored_sha256(s3: Any, bucket: str, key: str) -> str:
    """The SHA-256 of the stored object ``key``, read back from the store."""
    started = time.perf_counter()
    digest = hashlib.sha256()
    read = 0
    stored = await s3.get_object(Bucket=bucket, Key=key)
    async with stored["Body"] as body:
        while chunk := await body.read(READ_BACK_BYTES):
            digest.update(chunk)
            read += len(chunk)
    seconds = time.perf_counter() - started
    log.info("journal.sha256_read_back", bytes=read, ms=round(seconds * 1000, 1))
    return digest.hexdigest()


Locate = Callable[[int], tuple[int, int]]


@dataclass
class Journal:
    """What :func:`~mediaflow_worker.stream.stream_to_s3` records of one task's upload.
    Recording is advisory: a database hiccup loses the chance to continue, never the task.
    ``locate`` (a segmented stream's) says which segment, and where in it, a byte of the
    object comes from."""

    pool: asyncpg.Pool
    task_id: str
    source_url: str
    validator: str
    size: int | None
    locate: Locate | None = None

    async def started(self, key: str, upload_id: str, content_type: str) -> None:
        await self._write(
            """INSERT INTO media.task_uploads AS u
                   (task_id, object_key, upload_id, source_url, validator, size, content_type)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (task_id) DO UPDATE SET object_key = $2, upload_id = $3,
                   source_url = $4, validator = $5, size = $6, content_type = $7,
                   created_at = now()""",
            self.task_id,
            key,
            upload_id,
            self.source_url,
            self.validator,
            self.size,
            content_type,
            clear_parts=True,
        )

    async def part_done(self, number: int, part: dict[str, Any], first: int, last: int) -> None:
        checksum = {k: v for k, v in part.items() if k.startswith("Checksum")}
        segment, inside = self.locate(last + 1) if self.locate is not None else (None, None)
        await self._write(
            """INSERT INTO media.task_upload_parts AS p
                   (task_id, part_number, etag, checksum, first_byte, last_byte, next_segment,
                    next_segment_offset)
               VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8)
               ON CONFLICT (task_id, part_number) DO UPDATE
                   SET etag = $3, checksum = $4::jsonb, first_byte = $5, last_byte = $6,
                       next_segment = $7, next_segment_offset = $8""",
            self.task_id,
            number,
            part["ETag"],
            json.dumps(checksum),
            first,
            last,
            segment,
            inside,
        )

    async def finished(self) -> None:
        await self._write("DELETE FROM media.task_uploads WHERE task_id = $1", self.task_id)

    async def _write(self, sql: str, *args: Any, clear_parts: bool = False) -> None:
        try:
            async with self.pool.acquire() as con, con.transaction():
                if clear_parts:
                    await con.execute(
                        "DELETE FROM media.task_upload_parts WHERE task_id = $1", self.task_id
                    )
                await con.execute(sql, *args)
        except _DB_ERRORS as exc:
            log.warning("journal.not_recorded", task_id=self.task_id, error=repr(exc))
