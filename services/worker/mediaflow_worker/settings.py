"""The worker's settings, read once from the environment at start."""

from __future__ import annotations

from functools import cached_property
from typing import Self

from pydantic import Field, field_validator, model_validator

from mediaflow_libs.amqp import RETRY_DELAYS_MS
from mediaflow_libs.egress import EgressPolicy
from mediaflow_libs.s3 import MAX_COPY_BYTES
from mediaflow_libs.settings import MIB, EgressSettings, S3Settings, ServiceSettings

# S3 refuses parts below 5 MiB (except the last one), and copies at most 5 GiB per request;
# ours are at least 8 MiB, fewer requests per byte (the README's benchmarks measure it).
MIN_PART_BYTES = 5 * MIB
MIN_UPLOAD_PART_BYTES = 8 * MIB
_DELAY_QUEUES = ", ".join(f"{ms / 1000:g}" for ms in RETRY_DELAYS_MS)


class WorkerSettings(ServiceSettings, S3Settings, EgressSettings):
    port: int = Field(8104, description="The worker's HTTP port (/healthz, /readyz, /metrics)")
    worker_prefetch: int = Field(
        2, ge=1, description="Jobs one worker process handles at the same time"
    )
    upload_part_bytes: int = Field(
        MIN_UPLOAD_PART_BYTES,
        description=(
            "Size of one multipart upload part, at least 8 MiB (grown per job so no upload "
            "exceeds 10,000 parts). A source of known length passes through (a job holds about "
            "1 MiB whatever this is); one of unknown length is buffered (a job holds up to "
            "this x UPLOAD_PARTS_IN_FLIGHT). Measured: bench/worker_rss.py, "
            "bench/worker_throughput.py"
        ),
    )
    upload_parts_in_flight: int = Field(
        2,
        ge=1,
        le=4,
        description=(
            "Parts of one job in flight at the same time (being sent or filled, or awaiting "
            "the store's answer), at most 4"
        ),
    )
    max_media_bytes: int = Field(
        4 * 1024 * MIB, ge=1, description="Largest media accepted, in bytes (MAX_MEDIA_BYTES)"
    )
    auth_internal_url: str = Field(
        "http://127.0.0.1:8111",
        description="auth's internal base URL (its INTERNAL_PORT), never fetched from",
    )
    progress_interval_seconds: float = Field(
        0.5, gt=0, description="Least time between two progress updates of one task"
    )
    fetch_connect_timeout_seconds: float = Field(
        10, gt=0, description="Time allowed to connect to a media source"
    )
    fetch_read_timeout_seconds: float = Field(
        30, gt=0, description="Longest silence allowed while reading a media source"
    )
    fetch_total_timeout_seconds: float = Field(
        3600, gt=0, description="Longest a whole download may take, however steadily it trickles"
    )
    fetch_min_rate_bytes_per_second: float = Field(
        16 * 1024,
        ge=0,
        description="A source slower than this on average (0: no minimum) fails source_timeout",
    )
    fetch_min_rate_window_seconds: float = Field(
        30, gt=0, description="The window over which that minimum rate is measured"
    )
    fetch_max_resumes: int = Field(
        3,
        ge=0,
        description=(
            "Times per attempt a direct file that breaks off is continued with a range request "
            "(or, when it changed or honours no ranges, read again from its first byte)"
        ),
    )
    fetch_max_redirects: int = Field(
        5, ge=0, description="Redirects followed per source; each one is checked like the first URL"
    )
    retry_max_attempts: int = Field(
        5,
        ge=1,
        description=(
            "Attempts per task that store nothing new, the first included; a transient failure "
            "on the last one fails the task (and a copy of its job goes to the dead-letter "
            "queue). An attempt that adds parts to a resumable upload does not count: the "
            "parts are finite, so such a task still ends"
        ),
    )
    retry_base_delay_seconds: float = Field(
        2.0,
        gt=0,
        description=(
            "Backoff before the second attempt, doubling per attempt: after attempt n the wait "
            "is drawn between half and all of this × 2^(n-1) (at most "
            "RETRY_MAX_DELAY_SECONDS), then served by one of the broker's fixed delay queues "
            f"({_DELAY_QUEUES} s), the one below or above it at random so that the mean is "
            "the wait drawn. With the defaults the four retries wait 1 or 2 s, 2 or 5 s, "
            "2, 5 or 10 s, and 5, 10 or 30 s"
        ),
    )
    retry_max_delay_seconds: float = Field(
        600,
        gt=0,
        le=RETRY_DELAYS_MS[-1] / 1000,
        description=(
            "Longest backoff, at most the longest delay queue; a source's Retry-After is "
            "waited rounded up to the next delay queue, and one asking for more than this "
            "fails at once instead of holding the task"
        ),
    )
    lease_seconds: float = Field(
        30,
        gt=0,
        description=(
            "How long a task stays held by its worker after the last heartbeat: a dead "
            "worker's task is taken over by another one after this"
        ),
    )
    lease_heartbeat_seconds: float = Field(
        1.0,
        gt=0,
        description=(
            "How often a running job renews its lease and looks for a cancel (bounds how "
            "late a cancel is noticed, even when the source stalls)"
        ),
    )
    stale_task_seconds: float = Field(
        300,
        gt=0,
        description=(
            "A running task nobody has held for this long (its job message was lost, e.g. "
            "dead-lettered while the database was down) is queued again, or failed after "
            "its last attempt"
        ),
    )
    reaper_interval_seconds: float = Field(
        30,
        gt=0,
        description=(
            "How often each worker looks for such stale tasks, and for stored files to "
            "delete (expired results, deleted tasks)"
        ),
    )
    result_retention_days: int = Field(
        30,
        ge=0,
        description=(
            "Days a succeeded task's file is kept (its result.expires_at), then deleted and "
            "its download answered 410 result_expired; 0 keeps files for ever"
        ),
    )
    orphan_upload_seconds: float = Field(
        3600,
        gt=0,
        description=(
            "A multipart upload under tasks/ begun longer ago than this whose task is not "
            "running is aborted by the reaper's round (the S3 lifecycle rule "
            "AbortIncompleteMultipartUpload does the same from the store's side)"
        ),
    )
    resolve_max_pages: int = Field(
        2,
        ge=0,
        description="HTML pages followed to the media they name (og:video, <video>, JSON-LD)",
    )
    resolve_max_page_bytes: int = Field(
        2 * MIB, ge=1024, description="How much of an HTML page is read to find its media"
    )
    manifest_max_bytes: int = Field(
        8 * MIB, ge=1024, description="Largest HLS playlist or DASH manifest read"
    )
    segment_parallelism: int = Field(
        4,
        ge=1,
        le=32,
        description=(
            "Segments of an HLS or DASH stream fetched at once, handed on in order (memory: "
            "this many segments per stream)"
        ),
    )
    segment_retries: int = Field(
        3,
        ge=0,
        description=(
            "Tries again of a segment that fails transiently before its task fails (a "
            "segment is never skipped)"
        ),
    )
    segment_max_bytes: int = Field(
        64 * MIB, ge=1024, description="Largest single segment (or byte range) accepted"
    )
    extractors_enabled: bool = Field(
        True,
        description=(
            "Ask yt-dlp's extractors about platform pages and pages naming no media (all "
            "their requests go through the egress checks)"
        ),
    )
    extractor_max_response_bytes: int = Field(
        16 * MIB, ge=1024, description="Largest response an extractor may read (page, API)"
    )
    cache_enabled: bool = Field(
        True,
        description=(
            "Complete a task whose source was stored before (and still is) by a server-side "
            "copy of the stored object instead of downloading it again"
        ),
    )
    cache_ttl_seconds: float = Field(
        86400,
        gt=0,
        description="How long a downloaded result may stand in for a new download of its source",
    )
    s3_copy_threshold_bytes: int = Field(
        MAX_COPY_BYTES,
        ge=MIN_PART_BYTES,
        le=MAX_COPY_BYTES,
        description=(
            "Stored objects up to this size are copied (a cached result, the self-copy that "
            "sets an upload's SHA-256 metadata) in one CopyObject, larger ones by a multipart "
            "copy of UploadPartCopy parts of COPY_PART_BYTES; S3 copies at most 5 GiB per "
            "request"
        ),
    )
    copy_part_bytes: int = Field(
        1024 * MIB,
        ge=MIN_PART_BYTES,
        le=MAX_COPY_BYTES,
        description="Size of one UploadPartCopy part of a multipart copy",
    )
    shutdown_grace_seconds: float = Field(
        25,
        ge=0,
        description=(
            "On SIGTERM, how long in-flight jobs may run on before they are cancelled "
            "(their messages go back to the queue)"
        ),
    )

    @field_validator("upload_part_bytes")
    @classmethod
    def _check_part_size(cls, value: int) -> int:
        if value < MIN_UPLOAD_PART_BYTES:
            raise ValueError(
                f"UPLOAD_PART_BYTES must be at least {MIN_UPLOAD_PART_BYTES} (8 MiB); "
                f"{value} is too small"
            )
        return value

    @model_validator(mode="after")
    def _check_lease(self) -> Self:
        if self.lease_heartbeat_seconds * 2 > self.lease_seconds:
            raise ValueError(
                "LEASE_HEARTBEAT_SECONDS must be at most half of LEASE_SECONDS, or one late "
                "heartbeat loses a live worker its task"
            )
        return self

    @cached_property
    def egress(self) -> EgressPolicy:
        """The egress rule, with the system's servers' names resolved once (at start)."""
        return self.egress_policy(resolve=True)
