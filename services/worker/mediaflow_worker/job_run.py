"""One job, start to end: claim the task, bring its media to storage, record the outcome.

Every status change checks first that the job still holds the task's lease
(:mod:`mediaflow_worker.lease`); a job for a task held by another job waits in a delay queue
until the holder is done or dead. What the job produced is recorded by
:mod:`mediaflow_worker.outcome`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from opentelemetry import trace

from mediaflow_libs import task_transitions, tasks
from mediaflow_libs.s3 import delete_prefix
from mediaflow_worker import cache, journal, lease
from mediaflow_worker.backoff import delay_queue_ms
from mediaflow_worker.delay import publish_delayed
from mediaflow_worker.errors import TaskFailure
from mediaflow_worker.lease import Claimed, Exhausted, Held, Lease, LeaseLost, TaskWithdrawn
from mediaflow_worker.media.concat import SegmentedBody
from mediaflow_worker.media.fetcher import Fetcher
from mediaflow_worker.media.pipeline import open_task_media
from mediaflow_worker.metrics import BYTES_REFETCHED, CACHE_LOOKUPS, FAILURES, STAGE_SECONDS
from mediaflow_worker.outcome import Failed, Outcome, Produced, Stored, record, record_failure
from mediaflow_worker.progress import Progress, kept_progress
from mediaflow_worker.resources import Delivery, Resources
from mediaflow_worker.stream import stream_to_s3

__all__ = ["JobRun", "Outcome", "process_job"]

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("mediaflow.worker")

Stage = Literal["claim", "resolve", "transfer", "finalise"]
_INTERNAL_MESSAGE = "An internal error occurred; it has been logged."


@dataclass
class Stages:
    """Stage timings of one job: spans, the histogram and the summary line."""

    durations: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, stage: Stage) -> Iterator[None]:
        started = time.perf_counter()
        try:
            with tracer.start_as_current_span(stage):
                yield
        finally:
            # A stage may run in pieces (the cache look-up, then the source): they add up.
            self.durations[stage] = self.durations.get(stage, 0.0) + time.perf_counter() - started

    def observe(self) -> dict[str, float]:
        for stage, seconds in self.durations.items():
            STAGE_SECONDS.labels(stage).observe(seconds)
        return {f"{stage}_ms": round(s * 1000, 1) for stage, s in self.durations.items()}


async def process_job(delivery: Delivery, resources: Resources) -> Outcome:
    """Run the job and record its outcome; raises :class:`~mediaflow_worker.outcome.Unrecorded`
    (or the database's error) only when the outcome could not be recorded."""
    started = time.perf_counter()
    stages = Stages()
    with stages.timed("claim"):
        claimed = await _claim(delivery, resources)
    if claimed is None:
        log.info("job.skipped", reason="task ended or missing")
        return "skipped"
    if isinstance(claimed, Held):
        # 50 ms on top: the lease must have run out when the job comes back.
        delay_ms = delay_queue_ms(0, claimed.seconds + 0.05, resources.rng)
        await publish_delayed(delivery, resources, delay_ms)
        log.info("job.deferred", held_for=round(claimed.seconds, 3), delay_ms=delay_ms)
        return "deferred"
    if isinstance(claimed, Exhausted):
        FAILURES.labels("internal").inc()
        log.warning("job.exhausted", attempt=claimed.attempt)
        await journal.discard_task(
            resources.pool,
            resources.s3,
            resources.settings.s3_bucket,
            claimed.user_id,
            delivery.job.task_id,
        )
        return "failed"
    log.info("job.started", attempt=claimed.attempt)
    # An upload an earlier attempt recorded goes on under its own key.
    task_id = delivery.job.task_id
    key = await journal.recorded_key(resources.pool, task_id) or (
        tasks.object_key(claimed.user_id, task_id, claimed.attempt)
    )
    run = JobRun(delivery, resources, claimed, key, stages)
    return await run.run(started)


async def _claim(delivery: Delivery, resources: Resources) -> Claimed | Held | Exhausted | None:
    """Take the task's lease and mark it running; a task interrupted too often fails here."""
    task_id = delivery.job.task_id
    settings = resources.settings
    async with resources.pool.acquire() as con, con.transaction():
        claimed = await lease.claim(
            con, task_id, settings.retry_max_attempts, settings.lease_seconds
        )
        if isinstance(claimed, Claimed):
            await task_transitions.transition(
                con,
                resources.topology,
                task_id,
                tasks.RUNNING,
                attempt=claimed.attempt,
                error_code=None,
                error_message=None,
                **await kept_progress(con, task_id),
            )
        elif isinstance(claimed, Exhausted):
            failure = TaskFailure("internal", "The task was interrupted too often to finish.")
            await record_failure(con, delivery, resources, failure, claimed.attempt)
    return claimed


class JobRun:
    """A claimed job: its delivery, its claim on the task, the key its media goes to, and
    the timings of its stages."""

    def __init__(
        self,
        delivery: Delivery,
        resources: Resources,
        claimed: Claimed,
        key: str,
        stages: Stages,
    ) -> None:
        self.delivery = delivery
        self.resources = resources
        self.claimed = claimed
        self.key = key
        self.stages = stages
        self.task_id = delivery.job.task_id
        self.progress = Progress(resources, self.task_id, claimed.token)

    async def run(self, started: float) -> Outcome:
        settings = self.resources.settings
        held = Lease(
            self.resources.pool,
            self.task_id,
            self.claimed.token,
            settings.lease_seconds,
            settings.lease_heartbeat_seconds,
        )
        produced: Produced | None = None
        outcome: Outcome | None = None
        try:
            produced = await held.hold_while(self._obtain())
        except TaskWithdrawn:
            outcome = "canceled"  # the upload is aborted; the cancel and its refund are recorded
        except LeaseLost:
            outcome = "superseded"
        except TaskFailure as exc:
            produced = Failed(exc)
        except asyncio.CancelledError:
            await asyncio.shield(self._give_back())
            raise
        except Exception:
            log.exception("job.internal_error")
            produced = Failed(TaskFailure("internal", _INTERNAL_MESSAGE))
        if produced is not None:
            with self.stages.timed("finalise"):
                outcome = await record(
                    self.delivery, self.resources, self.claimed, self.key, produced
                )
        assert outcome is not None
        if outcome in ("failed", "canceled"):
            # An upload kept for another attempt that will not come.
            await self._abandon_upload()
        stored = produced if isinstance(produced, Stored) else None
        failed = produced if isinstance(produced, Failed) else None
        log.info(
            "job.finished",
            outcome=outcome,
            attempt=self.claimed.attempt,
            bytes=stored.result.size if stored else None,
            cache_hit=stored.cache_hit if stored else False,
            error_code=failed.failure.code if failed else None,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
            **self.stages.observe(),
        )
        return outcome

    async def _obtain(self) -> Stored:
        """Bring the media to the key: by a copy of a cached result, or from the source."""
        continuation = None
        if self.claimed.attempt > 1:
            s3, bucket = self.resources.s3, self.resources.settings.s3_bucket
            continuation = await journal.confirmed(self.resources.pool, s3, bucket, self.task_id)
            await self._discard_earlier_attempts(
                keep=continuation.upload_id if continuation else None
            )
        if self.resources.settings.cache_enabled:
            copied = await self._from_cache()
            if copied is not None:
                if continuation is not None:  # not needed after all
                    await self._abandon_upload()
                return copied
        return await self._from_source(continuation)

    async def _from_cache(self) -> Stored | None:
        with self.stages.timed("resolve"):
            cached = await self._cached()
        if cached is not None:
            with self.stages.timed("transfer"):
                copied = await self._copy_cached(cached)
            if copied:
                CACHE_LOOKUPS.labels("hit").inc()
                return Stored(cached.result, True, cached.described)
        CACHE_LOOKUPS.labels("miss").inc()
        return None

    async def _from_source(self, continuation: journal.Continuation | None) -> Stored:
        resources, settings = self.resources, self.resources.settings
        async with AsyncExitStack() as stack:
            with self.stages.timed("resolve"):
                source = await stack.enter_async_context(
                    open_task_media(
                        Fetcher(resources.http, resources.fetch_limits),
                        self.claimed.source_url,
                        self.delivery.options,
                        resources.resolvers,
                        resources.media_config,
                        continuation=continuation,
                    )
                )
            self.progress.total = source.size
            self.progress.segments = source.segments.percent
            continuation, recorder = await self._continue_or_record(source, continuation)
            with self.stages.timed("transfer"):
                result = await stream_to_s3(
                    source.chunks,
                    s3=resources.s3,
                    bucket=settings.s3_bucket,
                    key=self.key,
                    part_size=settings.upload_part_bytes,
                    parts_in_flight=settings.upload_parts_in_flight,
                    max_bytes=settings.max_media_bytes,
                    on_progress=self.progress.report,
                    expected_size=source.size,
                    copy_threshold=settings.s3_copy_threshold_bytes,
                    copy_part_bytes=settings.copy_part_bytes,
                    journal=recorder,
                    continuation=continuation,
                    content_type=source.content_type,
                )
            described = await source.describe(result.content_type)
        return Stored(result, False, described)

    async def _cached(self) -> cache.CachedResult | None:
        resources, settings = self.resources, self.resources.settings
        source_key = cache.result_key(self.claimed.source_url, self.delivery.options)
        async with resources.pool.acquire() as con:
            cached = await cache.lookup(con, source_key, settings.cache_ttl_seconds)
        if cached is None:
            return None
        if await cache.still_stored(resources.s3, settings.s3_bucket, cached):
            return cached
        async with resources.pool.acquire() as con:
            await cache.forget(con, source_key, cached.object_key)
        return None

    async def _copy_cached(self, cached: cache.CachedResult) -> bool:
        settings = self.resources.settings
        try:
            await cache.copy_stored(
                self.resources.s3,
                settings.s3_bucket,
                cached.object_key,
                self.key,
                cached.result.size,
                settings.s3_copy_threshold_bytes,
                settings.copy_part_bytes,
            )
        except TaskFailure as exc:
            # Gone between the look-up and the copy, say: the source is still there to download.
            log.warning("job.cache_copy_failed", error=exc.message, cached_key=cached.object_key)
            return False
        return True

    async def _continue_or_record(
        self, media: Any, continuation: journal.Continuation | None
    ) -> tuple[journal.Continuation | None, journal.Journal | None]:
        """The continuation the media goes on with, and the journal that records the upload
        (a direct file of known size with a validator, or one segmented stream, stored as
        it is)."""
        if continuation is not None and not media.continued:
            # The source changed, or is no longer a file as it was: start over.
            await self._abandon_upload()
            continuation = None
        if continuation is not None:
            progress = self.progress
            progress.counted = continuation.offset  # streamed by another attempt
            async with self.resources.pool.acquire() as con:
                progress.floor = await con.fetchval(
                    "SELECT bytes_done FROM media.tasks WHERE id = $1", self.task_id
                )
            # What the earlier attempt showed past its last stored part is fetched again.
            BYTES_REFETCHED.inc(max(progress.floor - continuation.offset, 0))
            log.info("job.continuing", at=continuation.offset, parts=len(continuation.parts))
        body = media.body
        if isinstance(body, SegmentedBody):
            locate: journal.Locate | None = body.locate
        elif body is None or body.size is None or body.validator is None:
            return continuation, None
        else:
            locate = None
        pool = self.resources.pool
        recorder = journal.Journal(pool, self.task_id, body.url, body.validator, body.size, locate)
        return continuation, recorder

    async def _abandon_upload(self) -> None:
        resources = self.resources
        await journal.abandon(
            resources.pool, resources.s3, resources.settings.s3_bucket, self.task_id
        )

    async def _discard_earlier_attempts(self, *, keep: str | None = None) -> None:
        """Abort uploads and delete objects an earlier attempt left under the task's prefix
        (a worker that died mid-upload, or whose outcome could not be recorded), but the
        upload ``keep`` that this attempt continues."""
        prefix = self.key.rsplit("/", 1)[0] + "/"
        try:
            await delete_prefix(
                self.resources.s3,
                self.resources.settings.s3_bucket,
                prefix,
                keep=self.key,
                keep_upload=keep,
            )
        except Exception as exc:
            log.warning("job.leftovers_not_removed", prefix=prefix, error=repr(exc))

    async def _give_back(self) -> None:
        """Release the lease of a job stopped by shutdown, so the next worker starts at once."""
        try:
            async with self.resources.pool.acquire() as con:
                await lease.release(con, self.task_id, self.claimed.token)
        except Exception as exc:
            log.warning("job.lease_not_released", error=repr(exc))
