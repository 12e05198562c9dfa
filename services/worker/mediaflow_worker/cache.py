"""Stored results by source: a task for a source stored before, whose object still exists,
completes by a server-side copy instead of a download.

The cache key is the normalised source URL (scheme and host in lower case, default port and
fragment dropped); entries are written in the transaction that records a downloaded result
and stand in for a new download for ``CACHE_TTL_SECONDS`` from then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from yarl import URL

from mediaflow_libs import db
from mediaflow_libs.s3 import copy_object
from mediaflow_worker.media.pipeline import Described
from mediaflow_worker.media.plan import Options
from mediaflow_worker.storage import storage_call
from mediaflow_worker.stream import StreamResult

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CachedResult:
    object_key: str
    result: StreamResult
    described: Described | None = None


def source_key(url: str) -> str:
    """``HTTP://Example.COM:80/a?b#c`` → ``http://example.com/a?b``: spellings of one URL
    share one entry; path and query stay as they are (servers may tell them apart)."""
    parsed = URL(url)
    # yarl lower-cases scheme and host and drops a default port on its own.
    return str(parsed.with_fragment(None))


def result_key(source_url: str, options: Options) -> str:
    """The entry for a source fetched with ``options``: other options make another file."""
    return source_key(source_url) + options.cache_suffix()


async def lookup(con: db.Connection, key: str, ttl_seconds: float) -> CachedResult | None:
    row = await con.fetchrow(
        """SELECT object_key, size, sha256, content_type, filename, media
           FROM media.source_cache
           WHERE source_key = $1 AND stored_at > now() - make_interval(secs => $2)""",
        key,
        ttl_seconds,
    )
    if row is None:
        return None
    described = (
        Described(row["filename"], row["media"] or {}) if row["filename"] is not None else None
    )
    return CachedResult(
        row["object_key"],
        StreamResult(row["size"], row["sha256"], row["content_type"]),
        described,
    )


async def remember(
    con: db.Connection,
    key: str,
    object_key: str,
    result: StreamResult,
    described: Described | None = None,
) -> None:
    await con.execute(
        """INSERT INTO media.source_cache
               (source_key, object_key, size, sha256, content_type, filename, media)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (source_key) DO UPDATE SET object_key = EXCLUDED.object_key,
               size = EXCLUDED.size, sha256 = EXCLUDED.sha256,
               content_type = EXCLUDED.content_type, filename = EXCLUDED.filename,
               media = EXCLUDED.media, stored_at = now()""",
        key,
        object_key,
        result.size,
        result.sha256,
        result.content_type,
        described.filename if described else None,
        described.media if described else None,
    )


async def forget(con: db.Connection, key: str, object_key: str) -> None:
    """Drop the entry, unless it has meanwhile been replaced by a newer result."""
    await con.execute(
        "DELETE FROM media.source_cache WHERE source_key = $1 AND object_key = $2",
        key,
        object_key,
    )


async def still_stored(s3: Any, bucket: str, cached: CachedResult) -> bool:
    """Whether the cached object exists as it was recorded (size and hash)."""
    try:
        head = await s3.head_object(Bucket=bucket, Key=cached.object_key)
    except Exception:
        # Missing, or the store cannot say: either way a download is the safe answer.
        return False
    metadata = head.get("Metadata", {})
    return bool(
        head.get("ContentLength") == cached.result.size
        and metadata.get("sha256") == cached.result.sha256
    )


async def copy_stored(
    s3: Any, bucket: str, source: str, target: str, size: int, threshold: int, part_bytes: int
) -> None:
    """Copy object ``source`` to ``target`` inside the store: one ``copy_object`` up to
    ``threshold``, a multipart ``upload_part_copy`` in parts of ``part_bytes`` beyond.
    Metadata (content type, sha256) comes along; a failed copy leaves nothing."""
    await storage_call(
        copy_object,
        client=s3,
        bucket=bucket,
        source=source,
        target=target,
        size=size,
        threshold=threshold,
        part_bytes=part_bytes,
    )
