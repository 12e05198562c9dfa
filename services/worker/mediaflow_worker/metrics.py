"""The worker's Prometheus metrics (served on its own port at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)

JOBS = Counter(
    "worker_jobs_total",
    "Job deliveries handled, by outcome: succeeded, failed, canceled, retried (put in a delay "
    "queue), deferred (the task was held by another job), skipped (the task had ended or "
    "does not exist), superseded (another job took the task over), rejected (malformed), "
    "requeued (the outcome could not be recorded)",
    ["outcome"],
)
FAILURES = Counter(
    "worker_failures_total", "Tasks the worker ended failed, by error code", ["code"]
)
RETRIES = Counter(
    "worker_retries_total",
    "Transient failures scheduled for another attempt, by error code",
    ["code"],
)
STAGE_SECONDS = Histogram(
    "worker_stage_duration_seconds",
    "Time per processing stage: claim (take the task), resolve (look the source up in the "
    "cache; connect, follow redirects and pages to the media), transfer (stream to "
    "storage, or copy a cached result), finalise (record the outcome)",
    ["stage"],
    buckets=_SECONDS_BUCKETS,
)
JOB_SECONDS = Histogram(
    "worker_job_duration_seconds",
    "Time from a delivery to its settled outcome, by outcome",
    ["outcome"],
    buckets=_SECONDS_BUCKETS,
)
CACHE_LOOKUPS = Counter(
    "worker_cache_lookups_total",
    "Cache look-ups for a task's source: hit (completed by a server-side copy) or miss",
    ["result"],
)
BYTES_STREAMED = Counter(
    "worker_bytes_streamed_total", "Media bytes read from sources and passed on to storage"
)
JOBS_IN_FLIGHT = Gauge("worker_jobs_in_flight", "Jobs this process is working on")
TASKS_REAPED = Counter(
    "worker_tasks_reaped_total",
    "Running tasks nobody held any more, queued again or failed by the reaper",
    ["action"],
)
STORED_FILES_REMOVED = Counter(
    "worker_stored_files_removed_total",
    "Tasks whose stored objects the sweep removed: expired (past RESULT_RETENTION_DAYS) or "
    "deleted (by their owner, when the delete itself could not reach the store)",
    ["reason"],
)
RESUMES = Counter(
    "worker_resumes_total",
    "Transfers continued instead of started over, by kind: in_attempt (a direct file that "
    "broke off, continued with a range request), restart (read again from its first byte "
    "within the attempt: the source changed, or honours no ranges), across_attempts (a "
    "retried or taken-over task continued at its last stored part: a direct file, or a "
    "segmented stream stored as it is, at the segment that part ends in)",
    ["kind"],
)
for _kind in ("in_attempt", "restart", "across_attempts"):
    RESUMES.labels(_kind)  # every kind on /metrics from the start, at zero
BYTES_REFETCHED = Counter(
    "worker_bytes_refetched_total",
    "Source bytes fetched a second time: those of a restarted body; when a task "
    "continues in another attempt, those its earlier attempt showed past its last stored "
    "part, and a direct file's first MiB, read again to probe what the file is; and the "
    "stored start of a segment fetched whole again (no range: a source that ignores it, or "
    "an encrypted segment)",
)
UPLOADS_SWEPT = Counter(
    "worker_orphan_uploads_aborted_total",
    "Multipart uploads no running task owned, aborted by the periodic sweep",
)
