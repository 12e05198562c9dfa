"""Metrics of media sources, by source kind: ``file``, ``page``, ``hls``, ``dash``, or the
name of the extractor (``youtube``, ``vimeo``, …); ``unresolved`` for a failure before the
source's kind is known."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

UNRESOLVED = "unresolved"

MEDIA_TASKS = Counter(
    "worker_media_tasks_total",
    "Tasks whose source was resolved, by source kind (file, page, hls, dash, extractor name)",
    ["kind"],
)
MEDIA_FAILURES = Counter(
    "worker_media_failures_total",
    "Failed tasks by source kind (unresolved: failed before its kind was known) and error code",
    ["kind", "code"],
)
SEGMENTS = Counter(
    "worker_media_segments_total",
    "Segments of manifests (and their keys and init sections) by source kind and outcome: "
    "fetched, or failed (after the segment's retries)",
    ["kind", "outcome"],
)
MUX_SECONDS = Histogram(
    "worker_media_mux_duration_seconds",
    "Time ffmpeg ran for one task (fetching its inputs included), by source kind",
    ["kind"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600),
)
