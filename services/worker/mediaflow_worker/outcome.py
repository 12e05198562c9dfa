"""Recording what a job produced: the task's final (or next) status, its event, the
refund and any message, committed together once the job still holds the task's lease.

Transient failures (:class:`~mediaflow_worker.errors.Retry`) go back to the jobs queue
through a delay queue after an exponential backoff with jitter, until ``RETRY_MAX_ATTEMPTS``
attempts stored nothing new; the rest fail the task at once, refunded in the same
transaction.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import structlog

from mediaflow_libs import db, outbox, task_transitions, tasks
from mediaflow_worker import cache, lease
from mediaflow_worker.backoff import backoff_seconds, delay_queue_ms
from mediaflow_worker.errors import Retry, TaskFailure
from mediaflow_worker.lease import Claimed
from mediaflow_worker.media.pipeline import Described
from mediaflow_worker.metrics import FAILURES, RETRIES
from mediaflow_worker.progress import kept_progress
from mediaflow_worker.resources import DB_ERRORS, Delivery, Resources
from mediaflow_worker.settings import WorkerSettings
from mediaflow_worker.stream import StreamResult

log = structlog.get_logger(__name__)

# How a job ended, as counted in metrics and logged.
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
# Database trouble while recording: tried again after these pauses, then the job is
# postponed whole.
_RECORD_PAUSES = (0.2, 1.0)


class Unrecorded(Exception):
    """The database refused the job's outcome even after a few tries."""


@dataclass(frozen=True)
class Stored:
    """The media is stored under the job's key."""

    result: StreamResult
    cache_hit: bool
    described: Described | None


@dataclass(frozen=True)
class Failed:
    """The job could not store the media; a :class:`Retry` may be tried again."""

    failure: TaskFailure


Produced = Stored | Failed


async def record(
    delivery: Delivery, resources: Resources, claimed: Claimed, key: str, produced: Produced
) -> Outcome:
    """Record what the job produced, trying again through a short database outage."""
    for pause in (*_RECORD_PAUSES, None):
        try:
            match produced:
                case Stored():
                    return await _succeed(delivery, resources, claimed, key, produced)
                case Failed(failure):
                    return await _fail_or_retry(delivery, resources, claimed, failure)
        except DB_ERRORS as exc:
            if pause is None:
                raise Unrecorded from exc
            log.warning("job.record_failed", error=repr(exc), retry_in=pause)
            await asyncio.sleep(pause)
    raise AssertionError("unreachable")


def result_expiry(settings: WorkerSettings, now: datetime | None = None) -> datetime | None:
    """When a result stored now is deleted; None when results are kept for ever."""
    if not settings.result_retention_days:
        return None
    return (now or datetime.now(UTC)) + timedelta(days=settings.result_retention_days)


async def _succeed(
    delivery: Delivery, resources: Resources, claimed: Claimed, key: str, stored: Stored
) -> Outcome:
    task_id = delivery.job.task_id
    result, described = stored.result, stored.described
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
        elif await task_transitions.transition(
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
            if resources.settings.cache_enabled and not stored.cache_hit:
                cache_key = cache.result_key(claimed.source_url, delivery.options)
                await cache.remember(con, cache_key, key, result, described)
        else:
            outcome = "canceled"  # while the last bytes went up; the refund is recorded
        await lease.release(con, task_id, claimed.token)
    if outcome != "succeeded":
        # The stored object belongs to nobody: the task was canceled or is another job's.
        await _delete_quietly(resources, key)
    return outcome


async def _delete_quietly(resources: Resources, key: str) -> None:
    try:
        await resources.s3.delete_object(Bucket=resources.settings.s3_bucket, Key=key)
    except Exception as exc:
        log.warning("job.orphan_not_deleted", key=key, error=repr(exc))


async def _fail_or_retry(
    delivery: Delivery, resources: Resources, claimed: Claimed, failure: TaskFailure
) -> Outcome:
    settings = resources.settings
    task_id = delivery.job.task_id
    retry = isinstance(failure, Retry)
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
        used = await lease.attempts_used(con, task_id)
        retry = retry and used < settings.retry_max_attempts
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
            if not await task_transitions.transition(
                con,
                resources.topology,
                task_id,
                tasks.RUNNING,
                **await kept_progress(con, task_id),
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
            if not await record_failure(
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


async def record_failure(
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
    row = await task_transitions.transition(
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
