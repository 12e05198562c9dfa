"""Multipart uploads nobody will finish: aborted by a periodic sweep.

A job aborts its own upload whatever ends it; what is left behind is a worker killed
mid-upload whose task then ended elsewhere (or never came back). Storage charges for the
parts of such uploads until they are aborted, so each worker, on the reaper's round, aborts
the uploads under ``tasks/`` older than ``ORPHAN_UPLOAD_SECONDS`` whose task is not running
(a running task's job owns its uploads and removes those of its earlier attempts itself).
The S3 lifecycle rule ``AbortIncompleteMultipartUpload`` (deploy/README.md) is the same
guarantee from the store's side.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog

from mediaflow_worker.metrics import UPLOADS_SWEPT

log = structlog.get_logger(__name__)

PREFIX = "tasks/"


def task_of(key: str) -> str | None:
    """The task id in an object key ``tasks/<user>/<task>/<attempt>``, or None."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != PREFIX.rstrip("/"):
        return None
    try:
        return str(uuid.UUID(parts[2]))
    except ValueError:
        return None


async def _uploads(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    markers: dict[str, str] = {}
    while True:
        page = await s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix, **markers)
        found += page.get("Uploads", [])
        if not page.get("IsTruncated"):
            return found
        markers = {
            "KeyMarker": page.get("NextKeyMarker", ""),
            "UploadIdMarker": page.get("NextUploadIdMarker", ""),
        }


async def sweep_orphan_uploads(
    pool: asyncpg.Pool, s3: Any, bucket: str, older_than_seconds: float, prefix: str = PREFIX
) -> int:
    """Abort the uploads under ``prefix`` (within ``tasks/``) no running task owns, begun
    more than ``older_than_seconds`` ago; returns how many were aborted."""
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
    old = [u for u in await _uploads(s3, bucket, prefix) if u["Initiated"] <= cutoff]
    owners = {u["UploadId"]: task_of(u["Key"]) for u in old}
    ids = sorted({t for t in owners.values() if t is not None})
    async with pool.acquire() as con:
        rows = await con.fetch(
            "SELECT id FROM media.tasks WHERE id = ANY($1::uuid[]) AND status = 'running'", ids
        )
    live = {str(row["id"]) for row in rows}
    aborted = 0
    for upload in old:
        if owners[upload["UploadId"]] in live:
            continue
        try:
            await s3.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        except Exception as exc:
            log.warning("sweep.abort_failed", key=upload["Key"], error=repr(exc))
            continue
        aborted += 1
    if aborted:
        UPLOADS_SWEPT.inc(aborted)
        log.warning("worker.orphan_uploads_aborted", uploads=aborted)
    return aborted
