"""One job, start to end: claim the task, bring its media to storage, record the outcome.

Every status change goes through :func:`mediaflow_libs.tasks.transition` in a transaction
that first checks the job still holds the task's lease (:mod:`mediaflow_worker.lease`), so
the task row, its event, the refund and any message (a retry, a dead-letter copy) commit
together. The delivery is acked only after that commit; deliveries come at least once, so
a job for a task that already ended is acked and changes nothing, and one for a task held
by another job waits in a delay queue until the holder is done or dead.

Transient failures (:class:`~mediaflow_worker.errors.Retry`) go back to the jobs queue
through a delay queue after an exponential backoff with jitter, up to
``RETRY_MAX_ATTEMPTS``; the rest fail the task at once, refunded in the same transaction.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aio_pika
import aiohttp
import asyncpg
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustConnection,
    FieldValue,
)
from google.protobuf.message import DecodeError
from opentelemetry import trace

from mediaflow_libs import db, outbox, tasks
from mediaflow_libs.amqp import Topology
from mediaflow_libs.contracts import Job
from mediaflow_libs.s3 import delete_prefix
from mediaflow_libs.telemetry import current_trace_id, extract_trace_context, trace_headers
from mediaflow_worker import cache, journal, lease
from mediaflow_worker.backoff import backoff_seconds, delay_queue_ms
from mediaflow_worker.errors import Retry, TaskFailure
from mediaflow_worker.fetch import FetchLimits
from mediaflow_worker.lease import Claimed, Exhausted, Held, Lease, LeaseLost, TaskWithdrawn
from mediaflow_worker.media.fetcher import Fetcher
from mediaflow_worker.media.pipeline import Described, MediaConfig, open_task_media
from mediaflow_worker.media.plan import Options
from mediaflow_worker.metrics import (
    BYTES_REFETCHED,
    BYTES_STREAMED,
    CACHE_LOOKUPS,
    FAILURES,
    JOB_SECONDS,
    JOBS,
    JOBS_IN_FLIGHT,
    RETRIES,
    STAGE_SECONDS,
    TASKS_REAPED,
)
from mediaflow_worker.resolve import Resolvers
from mediaflow_worker.settings import WorkerSettings
from mediaflow_worker.stream import StreamResult, stream_to_s3

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("mediaflow.worker")

Outcome = Literal[
    "succeeded",
    "failed",
    "canceled",
    "retried",
    "deferred",
    "skipped",
    "superseded",
    "rejected",
    "requeued",
]
Stage = Literal["claim", "resolve", "transfer", "finalise"]

JOB_MESSAGE_TYPE = "mediaflow.v1.Job"
_INTERNAL_MESSAGE = "An internal error occurred; it has been logged."
# Database trouble while recording an outcome: tried again after these pauses, then the
# job is postponed whole.
_RECORD_PAUSES = (0.2, 1.0)
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


@dataclass(frozen=True)
class Resources:
    """Everything a job needs, opened once per process by ``main``."""

    settings: WorkerSettings
    topology: Topology
    pool: asyncpg.Pool
    amqp: AbstractRobustConnection
    s3: Any  # the aiobotocore S3 client of mediaflow_libs.s3
    http: aiohttp.ClientSession
    publisher: AbstractChannel  # with publisher confirms: postponed jobs must not be lost
    resolvers: Resolvers = field(default_factory=Resolvers)
    rng: random.Random = field(default_factory=random.Random)

    @property
    def fetch_limits(self) -> FetchLimits:
        s = self.settings
        return FetchLimits(
            egress=s.egress,
            max_bytes=s.max_media_bytes,
            max_redirects=s.fetch_max_redirects,
            connect_timeout=s.fetch_connect_timeout_seconds,
            read_timeout=s.fetch_read_timeout_seconds,
            total_timeout=s.fetch_total_timeout_seconds,
            min_rate=s.fetch_min_rate_bytes_per_second,
            min_rate_window=s.fetch_min_rate_window_seconds,
        )

    @property
    def media_config(self) -> MediaConfig:
        s = self.settings
        return MediaConfig(
            max_pages=s.resolve_max_pages,
            max_page_bytes=s.resolve_max_page_bytes,
            manifest_max_bytes=s.manifest_max_bytes,
            segment_parallelism=s.segment_parallelism,
            segment_retries=s.segment_retries,
            segment_max_bytes=s.segment_max_bytes,
            extractors=s.extractors_enabled,
            extractor_max_bytes=s.extractor_max_response_bytes,
            extractor_timeout=s.fetch_total_timeout_seconds,
            max_resumes=s.fetch_max_resumes,
        )


class Unrecorded(Exception):
    """The database refused the job's outcome even after a few tries."""


@dataclass(frozen=True)
class Delivery:
    """What a job keeps of its message: the job, and the headers it carries on to a retry."""

    job: Job
    body: bytes
    headers: dict[str, str]  # the trace context

    def message_headers(self, **extra: str | int) -> dict[str, FieldValue]:
        return {"message_type": JOB_MESSAGE_TYPE, **self.headers, **extra}


@dataclass
class _Stages:
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


@dataclass
class _Progress:
    """Turns the pipeline's per-chunk callback into progress updates: at most one per
    ``PROGRESS_INTERVAL_SECONDS``, and (when the size is known) one per percent.

    A file made from segments has no size before it is made: its percent is the
    segments handed on over those known (``segments``), never lower than the last."""

    resources: Resources
    task_id: str
    token: str
    total: int | None = None
    counted: int = 0
    last_update: float = float("-inf")  # the first chunk reports at once, with the total
    last_percent: int = -1
    segments: Callable[[], int | None] | None = None
    floor: int = 0  # what the task shows already: progress never goes back

    async def report(self, done: int) -> None:
        BYTES_STREAMED.inc(max(done - self.counted, 0))
        self.counted = done
        if done <= self.floor:
            return
        now = time.monotonic()
        if now - self.last_update < self.resources.settings.progress_interval_seconds:
            return
        # 100 belongs to the finished task; while bytes are still moving it is at most 99.
        percent = min(done * 100 // self.total, 99) if self.total else None
        if percent is not None and percent < self.last_percent + 1:
            return
        if percent is None and self.segments is not None:
            # More segments become known as each stream's playlist is read: held, not lowered.
            by_segments = self.segments()
            if by_segments is not None:
                percent = max(min(by_segments, 99), self.last_percent)
        self.last_update = now
        self.last_percent = percent if percent is not None else -1
        try:
            async with self.resources.pool.acquire() as con, con.transaction():
                if not await lease.holds(con, self.task_id, self.token):
                    raise LeaseLost
                row = await tasks.transition(
                    con,
                    self.resources.topology,
                    self.task_id,
                    tasks.RUNNING,
                    bytes_done=done,
                    bytes_total=self.total,
                    progress=percent,
                )
        except _DB_ERRORS as exc:
            # Progress is advisory: a database hiccup must not fail a healthy download.
            log.warning("job.progress_not_recorded", error=repr(exc))
            return
        if row is None:
            raise TaskWithdrawn


async def handle_delivery(message: AbstractIncomingMessage, resources: Resources) -> None:
    """Process one delivery and settle it with the broker."""
    try:
        job = Job.FromString(message.body)
        uuid.UUID(job.task_id)
        uuid.UUID(job.user_id)
    except (DecodeError, ValueError):
        # Retrying cannot fix a malformed message; the dead-letter queue keeps it for a human.
        log.error("job.malformed", message_id=message.message_id, body_bytes=len(message.body))
        JOBS.labels("rejected").inc()
        await _settle(message.reject(requeue=False))
        return
    delivery = Delivery(job, message.body, trace_headers(message.headers))
    started = time.perf_counter()
    with (
        tracer.start_as_current_span(
            f"{resources.topology.jobs_queue} process",
            context=extract_trace_context(message.headers),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "process",
                "messaging.destination.name": resources.topology.jobs_queue,
                "mediaflow.task_id": job.task_id,
            },
        ) as span,
        structlog.contextvars.bound_contextvars(
            task_id=job.task_id, user_id=job.user_id, trace_id=current_trace_id()
        ),
    ):
        JOBS_IN_FLIGHT.inc()
        try:
            outcome = await process_job(delivery, resources)
        except asyncio.CancelledError:
            # Shutdown: the lease is given back, the job goes to another worker.
            JOBS.labels("requeued").inc()
            await asyncio.shield(_settle(message.nack(requeue=True)))
            raise
        except Exception:
            log.exception("job.not_recorded")
            outcome = "requeued"
            if not await _postpone(delivery, resources):
                JOBS.labels(outcome).inc()
                await _settle(message.nack(requeue=True))
                return
        finally:
            JOBS_IN_FLIGHT.dec()
        span.set_attribute("mediaflow.outcome", outcome)
        JOBS.labels(outcome).inc()
        JOB_SECONDS.labels(outcome).observe(time.perf_counter() - started)
        await _settle(message.ack())


async def _settle(settling: Awaitable[object]) -> None:
    try:
        await settling
    except Exception as exc:
        # The channel is gone, and with it the delivery: the broker hands it out again and
        # the next attempt finds the task ended, or held and waits.
        log.warning("job.settle_failed", error=repr(exc))


async def _publish_delayed(delivery: Delivery, resources: Resources, delay_ms: int) -> None:
    topology = resources.topology
    exchange = await resources.publisher.get_exchange(topology.delay_exchange, ensure=False)
    await exchange.publish(
        aio_pika.Message(
            delivery.body,
            headers=delivery.message_headers(),
            content_type="application/x-protobuf",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=topology.delay_routing_key(delay_ms),
        mandatory=True,
    )


async def _postpone(delivery: Delivery, resources: Resources) -> bool:
    """Put the job in a delay queue straight away (the database is what failed, so not
    through the outbox): a requeue would come back at once and use up the jobs queue's
    delivery limit while the database is still down."""
    delay_ms = delay_queue_ms(resources.settings.lease_seconds, 0, resources.rng)
    try:
        await _publish_delayed(delivery, resources, delay_ms)
    except Exception as exc:
        log.warning("job.postpone_failed", error=repr(exc))
        return False
    log.info("job.postponed", delay_ms=delay_ms)
    return True


async def process_job(delivery: Delivery, resources: Resources) -> Outcome:
    """Run the job and record its outcome; raises :class:`Unrecorded` (or the database's
    error) only when the outcome could not be recorded."""
    started = time.perf_counter()
    stages = _Stages()
    task_id = delivery.job.task_id
    settings = resources.settings
    with stages.timed("claim"):
        async with resources.pool.acquire() as con, con.transaction():
            claimed = await lease.claim(
                con, task_id, settings.retry_max_attempts, settings.lease_seconds
            )
            if isinstance(claimed, Claimed):
                await tasks.transition(
                    con,
                    resources.topology,
                    task_id,
                    tasks.RUNNING,
                    attempt=claimed.attempt,
                    error_code=None,
                    error_message=None,
                    **await _kept_progress(con, task_id),
                )
            elif isinstance(claimed, Exhausted):
                interrupted = TaskFailure(
                    "internal", "The task was interrupted too often to finish."
                )
                await _record_failure(con, delivery, resources, interrupted, claimed.attempt)
    if claimed is None:
        log.info("job.skipped", reason="task ended or missing")
        return "skipped"
    if isinstance(claimed, Held):
        # 50 ms on top: the lease must have run out when the job comes back.
        delay_ms = delay_queue_ms(0, claimed.seconds + 0.05, resources.rng)
        await _publish_delayed(delivery, resources, delay_ms)
        log.info("job.deferred", held_for=round(claimed.seconds, 3), delay_ms=delay_ms)
        return "deferred"
    if isinstance(claimed, Exhausted):
        FAILURES.labels("internal").inc()
        log.warning("job.exhausted", attempt=claimed.attempt)
        return "failed"
    log.info("job.started", attempt=claimed.attempt)

    # An upload an earlier attempt recorded goes on under its own key.
    key = await journal.recorded_key(resources.pool, task_id) or (
        tasks.object_key(claimed.user_id, task_id, claimed.attempt)
    )
    held = Lease(
        resources.pool,
        task_id,
        claimed.token,
        settings.lease_seconds,
        settings.lease_heartbeat_seconds,
    )
    progress = _Progress(resources, task_id, claimed.token)
    result: StreamResult | None = None
    described: Described | None = None
    cache_hit = False
    failure: TaskFailure | None = None
    outcome: Outcome | None = None
    try:
        options = job_options(delivery.job)
        result, cache_hit, described = await held.hold_while(
            _obtain(claimed, key, resources, stages, progress, options)
        )
    except TaskWithdrawn:
        outcome = "canceled"  # the upload is aborted; the cancel and its refund are recorded
    except LeaseLost:
        outcome = "superseded"
    except TaskFailure as exc:
        failure = exc
    except asyncio.CancelledError:
        await asyncio.shield(_give_back(task_id, claimed.token, resources))
        raise
    except Exception:
        log.exception("job.internal_error")
        failure = TaskFailure("internal", _INTERNAL_MESSAGE)
    if outcome is None:
        with stages.timed("finalise"):
            outcome = await _record(
                delivery, resources, claimed, key, result, cache_hit, failure, described
            )
    if outcome in ("failed", "canceled"):
        # An upload kept for another attempt that will not come.
        await journal.abandon(resources.pool, resources.s3, settings.s3_bucket, task_id)
    log.info(
        "job.finished",
        outcome=outcome,
        attempt=claimed.attempt,
        bytes=result.size if result else None,
        cache_hit=cache_hit,
        error_code=failure.code if failure else None,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        **stages.observe(),
    )
    return outcome


def result_expiry(settings: WorkerSettings, now: datetime | None = None) -> datetime | None:
    """When a result stored now is deleted; None when results are kept for ever."""
    if not settings.result_retention_days:
        return None
    return (now or datetime.now(UTC)) + timedelta(days=settings.result_retention_days)


def job_options(job: Job) -> Options:
    return Options.from_job(job.quality, job.mode, job.audio_format)


def _cache_key(source_url: str, options: Options) -> str:
    return cache.source_key(source_url) + options.cache_suffix()


async def _obtain(
    claimed: Claimed,
    key: str,
    resources: Resources,
    stages: _Stages,
    progress: _Progress,
    options: Options,
) -> tuple[StreamResult, bool, Described | None]:
    """Bring the media to ``key``: by a copy of a cached result, or from the source.
    Returns the result, whether it came from the cache, and what the stored file is."""
    settings = resources.settings
    continuation = None
    if claimed.attempt > 1:
        continuation = await journal.confirmed(
            resources.pool, resources.s3, settings.s3_bucket, progress.task_id
        )
        await _discard_earlier_attempts(
            resources, key, keep=continuation.upload_id if continuation else None
        )
    if settings.cache_enabled:
        with stages.timed("resolve"):
            cached = await _cached(resources, _cache_key(claimed.source_url, options))
        if cached is not None:
            with stages.timed("transfer"):
                copied = await _copy_cached(resources, cached, key)
            if copied:
                CACHE_LOOKUPS.labels("hit").inc()
                if continuation is not None:  # not needed after all
                    await journal.abandon(
                        resources.pool, resources.s3, settings.s3_bucket, progress.task_id
                    )
                return cached.result, True, cached.described
        CACHE_LOOKUPS.labels("miss").inc()
    async with AsyncExitStack() as stack:
        with stages.timed("resolve"):
            source = await stack.enter_async_context(
                open_task_media(
                    Fetcher(resources.http, resources.fetch_limits),
                    claimed.source_url,
                    options,
                    resources.resolvers,
                    resources.media_config,
                    continuation=continuation,
                )
            )
        progress.total = source.size
        progress.segments = source.segments.percent
        continuation, recorder = await _continue_or_record(
            resources, progress.task_id, source, continuation, progress
        )
        with stages.timed("transfer"):
            result = await stream_to_s3(
                source.chunks,
                s3=resources.s3,
                bucket=settings.s3_bucket,
                key=key,
                part_size=settings.upload_part_bytes,
                parts_in_flight=settings.upload_parts_in_flight,
                max_bytes=settings.max_media_bytes,
                on_progress=progress.report,
                expected_size=source.size,
                copy_threshold=settings.s3_copy_threshold_bytes,
                copy_part_bytes=settings.copy_part_bytes,
                journal=recorder,
                continuation=continuation,
            )
        described = await source.describe(result.content_type)
    return result, False, described


async def _cached(resources: Resources, source_key: str) -> cache.CachedResult | None:
    settings = resources.settings
    async with resources.pool.acquire() as con:
        cached = await cache.lookup(con, source_key, settings.cache_ttl_seconds)
    if cached is None:
        return None
    if await cache.still_stored(resources.s3, settings.s3_bucket, cached):
        return cached
    async with resources.pool.acquire() as con:
        await cache.forget(con, source_key, cached.object_key)
    return None


async def _copy_cached(resources: Resources, cached: cache.CachedResult, key: str) -> bool:
    settings = resources.settings
    try:
        await cache.copy_stored(
            resources.s3,
            settings.s3_bucket,
            cached.object_key,
            key,
            cached.result.size,
            settings.s3_copy_threshold_bytes,
            settings.copy_part_bytes,
        )
    except TaskFailure as exc:
        # Gone between the look-up and the copy, say: the source is still there to download.
        log.warning("job.cache_copy_failed", error=exc.message, cached_key=cached.object_key)
        return False
    return True


# --- resume across attempts (mediaflow_worker.journal) ------------------------------------


async def _kept_progress(con: db.Connection, task_id: str) -> dict[str, Any]:
    """A new attempt's progress: where the recorded upload stands (bytes_done never goes
    back on a transfer that goes on), else unknown (API.md: null until the size is known)."""
    kept = await journal.kept_bytes(con, task_id)
    if kept is None or kept[0] == 0:
        return {"progress": None, "bytes_done": 0, "bytes_total": None}
    shown = await con.fetchval("SELECT bytes_done FROM media.tasks WHERE id = $1", task_id)
    # A dead worker may have shown bytes it never stored: those are not taken back.
    done, total = max(kept[0], shown or 0), kept[1]
    return {"progress": min(done * 100 // total, 99), "bytes_done": done, "bytes_total": total}


async def _continue_or_record(
    resources: Resources,
    task_id: str,
    media: Any,
    continuation: journal.Continuation | None,
    progress: _Progress,
) -> tuple[journal.Continuation | None, journal.Journal | None]:
    """The continuation the media goes on with, and the journal that records the upload
    (a direct file of known size with a validator, stored as it is)."""
    bucket = resources.settings.s3_bucket
    if continuation is not None and not media.continued:
        # The source changed, or is no longer a file as it was: start over.
        await journal.abandon(resources.pool, resources.s3, bucket, task_id)
        continuation = None
    if continuation is not None:
        progress.counted = continuation.offset  # those bytes were streamed by another attempt
        async with resources.pool.acquire() as con:
            progress.floor = await con.fetchval(
                "SELECT bytes_done FROM media.tasks WHERE id = $1", task_id
            )
        # What the earlier attempt showed past its last stored part is fetched again.
        BYTES_REFETCHED.inc(max(progress.floor - continuation.offset, 0))
        log.info("job.continuing", at=continuation.offset, parts=len(continuation.parts))
    body = media.body
    if body is None or body.size is None or body.validator is None:
        return continuation, None
    recorder = journal.Journal(resources.pool, task_id, body.url, body.validator, body.size)
    return continuation, recorder


async def _discard_earlier_attempts(
    resources: Resources, key: str, *, keep: str | None = None
) -> None:
    """Abort uploads and delete objects an earlier attempt left under the task's prefix
    (a worker that died mid-upload, or whose outcome could not be recorded), but the
    upload ``keep`` that this attempt continues."""
    prefix = key.rsplit("/", 1)[0] + "/"
    try:
        await delete_prefix(
            resources.s3, resources.settings.s3_bucket, prefix, keep=key, keep_upload=keep
        )
    except Exception as exc:
        log.warning("job.leftovers_not_removed", prefix=prefix, error=repr(exc))


async def _give_back(task_id: str, token: str, resources: Resources) -> None:
    """Release the lease of a job stopped by shutdown, so the next worker starts at once."""
    try:
        async with resources.pool.acquire() as con:
            await lease.release(con, task_id, token)
    except Exception as exc:
        log.warning("job.lease_not_released", error=repr(exc))


async def _delete_quietly(resources: Resources, key: str) -> None:
    try:
        await resources.s3.delete_object(Bucket=resources.settings.s3_bucket, Key=key)
    except Exception as exc:
        log.warning("job.orphan_not_deleted", key=key, error=repr(exc))


async def _record(
    delivery: Delivery,
    resources: Resources,
    claimed: Claimed,
    key: str,
    result: StreamResult | None,
    cache_hit: bool,
    failure: TaskFailure | None,
    described: Described | None = None,
) -> Outcome:
    """Record the outcome, trying again through a short database outage."""
    for pause in (*_RECORD_PAUSES, None):
        try:
            if result is not None:
                return await _succeed(
                    delivery, resources, claimed, key, result, cache_hit, described
                )
            assert failure is not None
            return await _fail_or_retry(delivery, resources, claimed, failure)
        except _DB_ERRORS as exc:
            if pause is None:
                raise Unrecorded from exc
            log.warning("job.record_failed", error=repr(exc), retry_in=pause)
            await asyncio.sleep(pause)
    raise AssertionError("unreachable")


async def _succeed(
    delivery: Delivery,
    resources: Resources,
    claimed: Claimed,
    key: str,
    result: StreamResult,
    cache_hit: bool,
    described: Described | None,
) -> Outcome:
    task_id = delivery.job.task_id
    outcome: Outcome = "succeeded"
    async with resources.pool.acquire() as con, con.transaction():
        row = await con.fetchrow(
            "SELECT status, lease_owner, object_key FROM media.tasks WHERE id = $1 FOR UPDATE",
            task_id,
        )
        if row is not None and row["status"] == tasks.SUCCEEDED and row["object_key"] == key:
            return "succeeded"  # an earlier try of this very write committed
        if row is None:
            outcome = "skipped"  # the task is gone: its object belongs to nobody
        elif row["lease_owner"] != claimed.token:
            outcome = "superseded"
        elif await tasks.transition(
            con,
            resources.topology,
            task_id,
            tasks.SUCCEEDED,
            progress=100,
            bytes_done=result.size,
            bytes_total=result.size,
            object_key=key,
            result_size=result.size,
            result_sha256=result.sha256,
            result_content_type=result.content_type,
            result_filename=described.filename if described else None,
            result_media=described.media if described else None,
            result_expires_at=result_expiry(resources.settings),
        ):
            if resources.settings.cache_enabled and not cache_hit:
                cache_key = _cache_key(claimed.source_url, job_options(delivery.job))
                await cache.remember(con, cache_key, key, result, described)
        else:
            outcome = "canceled"  # while the last bytes went up; the refund is recorded
        await lease.release(con, task_id, claimed.token)
    if outcome != "succeeded":
        # The stored object belongs to nobody: the task was canceled or is another job's.
        await _delete_quietly(resources, key)
    return outcome


async def _fail_or_retry(
    delivery: Delivery, resources: Resources, claimed: Claimed, failure: TaskFailure
) -> Outcome:
    settings = resources.settings
    task_id = delivery.job.task_id
    retry = isinstance(failure, Retry) and claimed.attempt < settings.retry_max_attempts
    if isinstance(failure, Retry) and (failure.delay or 0) > settings.retry_max_delay_seconds:
        # Holding the task (and the user's credit) for longer than that helps nobody.
        failure = TaskFailure(
            failure.code,
            f"{failure.message} The source asked to wait {failure.delay or 0:.0f} s, longer "
            "than this service waits.",
        )
        retry = False
    async with resources.pool.acquire() as con, con.transaction():
        if not await lease.holds(con, task_id, claimed.token):
            return "superseded"
        if retry:
            assert isinstance(failure, Retry)
            wanted = backoff_seconds(
                claimed.attempt,
                settings.retry_base_delay_seconds,
                settings.retry_max_delay_seconds,
                resources.rng,
            )
            delay_ms = delay_queue_ms(wanted, failure.delay or 0, resources.rng)
            # Progress starts over with the next attempt, unless its upload goes on; the
            # status stays running.
            if not await tasks.transition(
                con,
                resources.topology,
                task_id,
                tasks.RUNNING,
                **await _kept_progress(con, task_id),
            ):
                return "canceled"
            await lease.release(con, task_id, claimed.token, for_seconds=delay_ms / 1000)
            await outbox.enqueue(
                con,
                exchange=resources.topology.delay_exchange,
                routing_key=resources.topology.delay_routing_key(delay_ms),
                body=delivery.body,
                mandatory=True,
                headers=delivery.message_headers(),
            )
        else:
            exhausted = isinstance(failure, Retry)
            if not await _record_failure(
                con, delivery, resources, failure, claimed.attempt, dead_letter=exhausted
            ):
                return "canceled"
            await lease.release(con, task_id, claimed.token)
    if retry:
        RETRIES.labels(failure.code).inc()
        log.info("job.retry_scheduled", code=failure.code, delay_ms=delay_ms)
        return "retried"
    FAILURES.labels(failure.code).inc()
    return "failed"


async def _record_failure(
    con: db.Connection,
    delivery: Delivery,
    resources: Resources,
    failure: TaskFailure,
    attempt: int,
    *,
    dead_letter: bool = True,
) -> bool:
    """Fail the task (the transition refunds it, once) and, for a job that ran out of
    attempts, put a copy of it in the dead-letter queue; False when the task had ended."""
    row = await tasks.transition(
        con,
        resources.topology,
        delivery.job.task_id,
        tasks.FAILED,
        error_code=failure.code,
        error_message=failure.message,
    )
    if row is None:
        return False
    if dead_letter:
        await outbox.enqueue(
            con,
            exchange=resources.topology.dead_letter_exchange,
            routing_key=resources.topology.job_routing_key(),
            body=delivery.body,
            mandatory=True,
            headers=delivery.message_headers(
                **{"x-mediaflow-error-code": failure.code, "x-mediaflow-attempt": attempt}
            ),
        )
    return True


async def reap_stale_tasks(resources: Resources) -> int:
    """Queue again (or fail, after their last attempt) running tasks nobody has held for
    ``STALE_TASK_SECONDS``: their job message is gone, e.g. dead-lettered by the jobs
    queue's delivery limit while the database was down. Returns how many it touched."""
    settings = resources.settings
    topology = resources.topology
    async with resources.pool.acquire() as con, con.transaction():
        rows = await con.fetch(
            """SELECT id, user_id, source_url, attempt, options FROM media.tasks
               WHERE status = 'running'
                 AND coalesce(lease_expires_at, updated_at)
                     < now() - make_interval(secs => $1)
               ORDER BY lease_expires_at NULLS FIRST LIMIT 100
               FOR UPDATE SKIP LOCKED""",
            settings.stale_task_seconds,
        )
        actions = []
        # Failing a task takes its user's event lock (migration 0006): users in one order, so
        # two reapers running at once cannot each hold a lock the other waits for.
        for row in sorted(rows, key=lambda row: row["user_id"]):
            options = tasks.job_options(row["options"])
            job = Job(
                task_id=str(row["id"]),
                user_id=str(row["user_id"]),
                source_url=row["source_url"],
                quality=options["quality"],
                mode=options["mode"],
                audio_format=options["audio_format"],
            )
            delivery = Delivery(job, job.SerializeToString(), {})
            if row["attempt"] >= settings.retry_max_attempts:
                failure = TaskFailure("internal", "The task stopped making progress.")
                await _record_failure(con, delivery, resources, failure, row["attempt"])
                actions.append("failed")
                continue
            # Claimable at once; if this message is lost too, the next round sends another.
            await con.execute(
                """UPDATE media.tasks SET lease_owner = NULL, lease_expires_at = now()
                   WHERE id = $1""",
                row["id"],
            )
            await outbox.enqueue(
                con,
                exchange=topology.jobs_exchange,
                routing_key=topology.job_routing_key(),
                body=delivery.body,
                mandatory=True,
                headers=delivery.message_headers(),
            )
            actions.append("requeued")
    for action in actions:
        TASKS_REAPED.labels(action).inc()
        if action == "failed":
            FAILURES.labels("internal").inc()
    if rows:
        log.warning("worker.stale_tasks_reaped", tasks=len(rows))
    return len(rows)
