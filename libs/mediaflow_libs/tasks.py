"""The task aggregate: its public JSON, and every status change in one place.

A change updates the task row, appends a task event and puts the event in the
outbox, all in the caller's transaction; a task ending ``failed`` or ``canceled``
is refunded in that same transaction.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter, Histogram

from mediaflow_libs import credits, naming, telemetry
from mediaflow_libs.amqp import Topology
from mediaflow_libs.contracts import (
    Job,
    Task,
    TaskError,
    TaskEvent,
    TaskMedia,
    TaskOptions,
    TaskResult,
)

log = structlog.get_logger(__name__)

QUEUED, RUNNING, SUCCEEDED = "queued", "running", "succeeded"
FAILED, CANCELED = "failed", "canceled"
TERMINAL_STATUSES = frozenset({SUCCEEDED, FAILED, CANCELED})
REFUNDED_STATUSES = frozenset({FAILED, CANCELED})
# API.md: the only legal transitions.
LEGAL_TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({RUNNING, CANCELED, FAILED}),
    RUNNING: frozenset({RUNNING, SUCCEEDED, FAILED, CANCELED}),
}
_CHANGEABLE_COLUMNS = frozenset(
    {
        "progress",
        "bytes_done",
        "bytes_total",
        "attempt",
        "error_code",
        "error_message",
        "object_key",
        "result_size",
        "result_sha256",
        "result_content_type",
        "result_filename",
        "result_media",
        "result_expires_at",
    }
)
# API.md's options and their defaults; `quality` is "best" or one of these heights.
DEFAULT_OPTIONS: dict[str, str] = {"quality": "best", "mode": "auto", "audio_format": "original"}
QUALITY_HEIGHTS = (2160, 1440, 1080, 720, 480, 360, 240, 144)
OPTION_VALUES: dict[str, tuple[str, ...]] = {
    "quality": ("best", *(str(h) for h in QUALITY_HEIGHTS)),
    "mode": ("auto", "audio", "mute"),
    "audio_format": ("original", "mp3", "opus"),
}
_MEDIA_FIELDS = ("title", "duration_seconds", "width", "height", "video_codec", "audio_codec")

TRANSITIONS = Counter("task_transitions_total", "Task status changes", ["from_status", "to_status"])
SUBMISSION_BATCH_SIZE = Histogram(
    "task_submission_batch_size",
    "Task submissions written to the database in one transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
TRANSITIONS_REFUSED = Counter(
    "task_transitions_refused_total", "Illegal task status changes refused", ["to_status"]
)


def object_prefix(user_id: str, task_id: str) -> str:
    """Where every object of a task is stored: one per attempt, under this prefix."""
    return f"tasks/{user_id}/{task_id}/"


def object_key(user_id: str, task_id: str, attempt: int) -> str:
    return f"{object_prefix(user_id, task_id)}{attempt}"


def sources_of(target: str) -> list[str]:
    """The statuses a task may move to ``target`` from."""
    return sorted(src for src, targets in LEGAL_TRANSITIONS.items() if target in targets)


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def stored_options(value: Any) -> dict[str, str]:
    """A task's options as stored (null for a task from before options), defaults filled in."""
    found = _json_object(value)
    return {name: str(found.get(name) or default) for name, default in DEFAULT_OPTIONS.items()}


def _json_object(value: Any) -> dict[str, Any]:
    """A jsonb column's object, decoded or not by the connection's codec."""
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


def job_options(value: Any) -> dict[str, str]:
    """The job message's option fields for stored options: empty where the default is."""
    options = stored_options(value)
    return {name: "" if v == DEFAULT_OPTIONS[name] else v for name, v in options.items()}


def task_message(row: Any) -> Task:
    task = Task(
        id=str(row["id"]),
        user_id=str(row["user_id"]),
        status=row["status"],
        bytes_done=row["bytes_done"],
        source_url=row["source_url"],
        attempt=row["attempt"],
        created_at=_timestamp(row["created_at"]),
        updated_at=_timestamp(row["updated_at"]),
        options=TaskOptions(**stored_options(row.get("options"))),
    )
    if row["progress"] is not None:
        task.progress = row["progress"]
    if row["bytes_total"] is not None:
        task.bytes_total = row["bytes_total"]
    if row["error_code"] is not None:
        task.error.CopyFrom(TaskError(code=row["error_code"], message=row["error_message"] or ""))
    if row["status"] == SUCCEEDED and row["result_sha256"] is not None:
        content_type = row["result_content_type"] or "application/octet-stream"
        media = _json_object(row.get("result_media"))
        task.result.CopyFrom(
            TaskResult(
                size=row["result_size"],
                sha256=row["result_sha256"],
                content_type=content_type,
                # Results stored before file names were: named after the URL.
                filename=row.get("result_filename")
                or naming.filename(None, row["source_url"], content_type),
                media=TaskMedia(**{k: media[k] for k in _MEDIA_FIELDS if media.get(k) is not None}),
            )
        )
        if row.get("result_expires_at") is not None:
            task.result.expires_at.CopyFrom(_timestamp(row["result_expires_at"]))
    return task


def _media_json(media: TaskMedia) -> dict[str, Any]:
    return {name: getattr(media, name) if media.HasField(name) else None for name in _MEDIA_FIELDS}


def _rfc3339(stamp: Timestamp) -> str:
    return stamp.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def task_json(task: Task) -> dict[str, Any]:
    """The task as API.md shows it."""
    return {
        "id": task.id,
        "status": task.status,
        "progress": task.progress if task.HasField("progress") else None,
        "bytes_done": task.bytes_done,
        "bytes_total": task.bytes_total if task.HasField("bytes_total") else None,
        "source_url": task.source_url,
        "attempt": task.attempt,
        "error": {"code": task.error.code, "message": task.error.message}
        if task.HasField("error")
        else None,
        "options": {
            "quality": int(task.options.quality)
            if task.options.quality.isdigit()
            else task.options.quality or "best",
            "mode": task.options.mode or "auto",
            "audio_format": task.options.audio_format or "original",
        },
        "result": {
            "size": task.result.size,
            "sha256": task.result.sha256,
            "content_type": task.result.content_type,
            "filename": task.result.filename,
            "media": _media_json(task.result.media),
            "expires_at": _rfc3339(task.result.expires_at)
            if task.result.HasField("expires_at")
            else None,
        }
        if task.HasField("result")
        else None,
        "created_at": _rfc3339(task.created_at),
        "updated_at": _rfc3339(task.updated_at),
    }


_EVENT_HEADERS = {"message_type": "mediaflow.v1.TaskEvent"}


def _event_arguments(topology: Topology, task: Task) -> tuple[Any, ...]:
    """``media.record_task_event``'s arguments after the task's id, user and status: the
    snapshot, where the message goes, and the message without its event id (which the
    database adds, being the one to know it)."""
    return (
        task_json(task),
        topology.events_exchange,
        topology.event_routing_key(task.user_id, task.id),
        TaskEvent(task=task).SerializeToString(),
        _EVENT_HEADERS,
    )


async def record_event(con: asyncpg.Connection, topology: Topology, row: Any) -> int:
    """Append the task's current state as an event and queue it for publishing."""
    task = task_message(row)
    event_id: int = await con.fetchval(
        "SELECT media.record_task_event($1, $2, $3, $4, $5, $6, $7, $8)",
        row["id"],
        row["user_id"],
        row["status"],
        *_event_arguments(topology, task),
    )
    return event_id


SubmitOutcome = Literal[
    "accepted", "replayed", "idempotency_conflict", "rate_limited", "insufficient_credits"
]


@dataclass(frozen=True)
class Submission:
    outcome: SubmitOutcome
    task: dict[str, Any] | None = None  # as API.md shows it (accepted, replayed)
    retry_after: int | None = None  # seconds (rate_limited)


@dataclass(frozen=True)
class _Prepared:
    """One submission as ``media.submit_tasks`` takes it, built in the request's context
    (its trace, its clock)."""

    user_id: str
    idempotency_key: str | None
    request_hash: bytes | None
    row: dict[str, Any]  # the new task row as JSON, id included
    snapshot: dict[str, Any]  # the task as API.md shows it
    job_body: bytes
    job_headers: dict[str, Any]
    event_routing_key: str
    event_task_field: bytes

    @property
    def lock_order(self) -> tuple[str, str]:
        return self.user_id, self.idempotency_key or ""


class Submitter:
    """Creates tasks, charged, each with its first event and its job in the outbox; or
    refuses them, writing nothing. The task's id and timestamps are chosen here, which lets
    its messages be built before it exists.

    Submissions that arrive while earlier ones are being written wait and then go to the
    database together: one call of ``media.submit_tasks``, one transaction, one commit, each
    with its own outcome. An idle gateway sends each at once; a busy one pays the commit and
    the round trip once per batch instead of once per task."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        topology: Topology,
        *,
        cost: int,
        signup_credits: int,
        submits_per_window: int,
        window_seconds: int,
        max_batch: int = 64,
        max_in_flight: int = 2,
    ) -> None:
        self._pool = pool
        self._topology = topology
        self._cost = cost
        self._signup_credits = signup_credits
        self._submits_per_window = submits_per_window
        self._window_seconds = window_seconds
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._waiting: list[tuple[_Prepared, asyncio.Future[Submission]]] = []
        self._in_flight = 0  # writers running
        self._writers: set[asyncio.Task[None]] = set()  # held, so none is collected early

    async def submit(
        self,
        *,
        user_id: str,
        source_url: str,
        idempotency_key: str | None = None,
        request_hash: bytes | None = None,
        options: dict[str, str] | None = None,
    ) -> Submission:
        prepared = self._prepare(user_id, source_url, idempotency_key, request_hash, options)
        answer: asyncio.Future[Submission] = asyncio.get_running_loop().create_future()
        # Retrieved even when its caller is gone, so an error is not reported as unseen.
        answer.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._waiting.append((prepared, answer))
        if self._in_flight < self._max_in_flight:
            self._in_flight += 1
            writer = asyncio.create_task(self._write_waiting(), name="task-submissions")
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        # Shielded: a caller that goes away does not take its submission (or the others in
        # its batch) with it; the task is created all the same, as it would be alone.
        return await asyncio.shield(answer)

    async def aclose(self) -> None:
        """Wait for the submissions already handed over (before the pool closes)."""
        while self._writers:
            await asyncio.gather(*self._writers, return_exceptions=True)

    def _prepare(
        self,
        user_id: str,
        source_url: str,
        idempotency_key: str | None,
        request_hash: bytes | None,
        options: dict[str, str] | None = None,
    ) -> _Prepared:
        now = datetime.now(UTC)
        row: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "user_id": user_id,
            "source_url": source_url,
            "status": QUEUED,
            "progress": None,
            "bytes_done": 0,
            "bytes_total": None,
            "attempt": 0,
            "cost": self._cost,
            "error_code": None,
            "error_message": None,
            "object_key": None,
            "result_size": None,
            "result_sha256": None,
            "result_content_type": None,
            "result_filename": None,
            "result_media": None,
            "options": stored_options(options),
            "created_at": now,
            "updated_at": now,
        }
        task = task_message(row)
        job = Job(
            task_id=task.id,
            user_id=user_id,
            source_url=source_url,
            requested_at=task.created_at,
            **job_options(options),
        )
        snapshot, _, event_routing_key, event_task_field, _ = _event_arguments(self._topology, task)
        return _Prepared(
            user_id=user_id,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            row=row | {"created_at": now.isoformat(), "updated_at": now.isoformat()},
            snapshot=snapshot,
            job_body=job.SerializeToString(),
            # The worker's span continues this request's trace.
            job_headers=telemetry.inject_trace_context({"message_type": "mediaflow.v1.Job"}),
            event_routing_key=event_routing_key,
            event_task_field=event_task_field,
        )

    async def _write_waiting(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                await self._write_batch(batch)
        finally:
            # Counted down as the queue is found empty, with no await in between: a
            # submission arriving after this starts a writer of its own.
            self._in_flight -= 1

    async def _write_batch(self, batch: list[tuple[_Prepared, asyncio.Future[Submission]]]) -> None:
        batch.sort(key=lambda entry: entry[0].lock_order)
        SUBMISSION_BATCH_SIZE.observe(len(batch))
        outcomes: list[Submission] | list[BaseException]
        try:
            async with self._pool.acquire() as con:
                outcomes = await self._submit_all(con, [prepared for prepared, _ in batch])
        except _Refused as refused:
            # Nothing of the batch was written. One submission's fault must not fail the
            # others: each is tried on its own.
            if len(batch) > 1:
                for entry in batch:
                    await self._write_batch([entry])
                return
            outcomes = [refused.error]
        except Exception as exc:
            # Whether it was written is unknown (the connection went away, the server shut
            # down): not retried, exactly as a single submission's failure would not be.
            outcomes = [exc] * len(batch)
        for (_, answer), outcome in zip(batch, outcomes, strict=True):
            _settle(answer, outcome)

    async def _submit_all(
        self, con: asyncpg.Connection, batch: list[_Prepared]
    ) -> list[Submission]:
        try:
            rows = await con.fetch(
                """SELECT item, outcome, retry_after, task_id FROM media.submit_tasks(
                       $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                   ORDER BY item""",
                [p.row for p in batch],
                [p.snapshot for p in batch],
                [p.idempotency_key for p in batch],
                [p.request_hash for p in batch],
                self._signup_credits,
                self._submits_per_window,
                self._window_seconds,
                self._topology.jobs_exchange,
                self._topology.job_routing_key(),
                [p.job_body for p in batch],
                [p.job_headers for p in batch],
                self._topology.events_exchange,
                [p.event_routing_key for p in batch],
                [p.event_task_field for p in batch],
                _EVENT_HEADERS,
            )
        except _MAYBE_COMMITTED:
            raise
        except asyncpg.PostgresError as exc:
            raise _Refused(exc) from exc
        answers = []
        for prepared, row in zip(batch, rows, strict=True):
            outcome: SubmitOutcome = row["outcome"]
            if outcome == "accepted":
                answers.append(Submission(outcome, prepared.snapshot))
            elif outcome == "replayed":
                earlier = await con.fetchrow(
                    "SELECT * FROM media.tasks WHERE id = $1", row["task_id"]
                )
                answers.append(Submission(outcome, task_json(task_message(earlier))))
            else:
                answers.append(Submission(outcome, retry_after=row["retry_after"]))
        return answers


# A statement ended by these may have committed before the server said so.
_MAYBE_COMMITTED = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)


class _Refused(Exception):
    """The database refused a statement while running it: it was rolled back, all of it."""

    def __init__(self, error: asyncpg.PostgresError) -> None:
        super().__init__(str(error))
        self.error = error


def _settle(answer: asyncio.Future[Submission], outcome: Submission | BaseException) -> None:
    if answer.done():
        return
    if isinstance(outcome, BaseException):
        answer.set_exception(outcome)
    else:
        answer.set_result(outcome)


async def transition(
    con: asyncpg.Connection,
    topology: Topology,
    task_id: str,
    target: str,
    **changes: Any,
) -> asyncpg.Record | None:
    """Move a task to ``target`` if that is legal from its current status.

    Returns the updated row, or None when the change was refused (the task is
    in a status that may not move to ``target``). Must run inside a transaction.
    """
    if not con.is_in_transaction():
        raise RuntimeError("task transitions must run inside a transaction")
    unknown = set(changes) - _CHANGEABLE_COLUMNS
    if unknown:
        raise ValueError(f"not task columns: {sorted(unknown)}")
    # The lock orders concurrent changes of one task; the WHERE clause is the rule itself.
    previous = await con.fetchval(
        "SELECT status FROM media.tasks WHERE id = $1 FOR UPDATE", task_id
    )
    assignments = "".join(f", {column} = ${i}" for i, column in enumerate(changes, start=4))
    row = await con.fetchrow(
        f"""UPDATE media.tasks SET status = $2{assignments}
            WHERE id = $1 AND status = ANY($3::text[]) RETURNING *""",
        task_id,
        target,
        sources_of(target),
        *changes.values(),
    )
    if row is None:
        TRANSITIONS_REFUSED.labels(target).inc()
        log.warning(
            "task.transition_refused", task_id=task_id, from_status=previous, to_status=target
        )
        return None
    TRANSITIONS.labels(previous, target).inc()
    await record_event(con, topology, row)
    if target in REFUNDED_STATUSES:
        await credits.refund(con, str(row["user_id"]), task_id)
    return row


async def delete(con: asyncpg.Connection, topology: Topology, task_id: str, user_id: str) -> bool:
    """Take the user's task out of everything they see: canceled first (and so refunded)
    when it has not finished, then marked deleted; its Idempotency-Key is free again and
    the source cache forgets its result. False when the user has no such task. The stored
    objects are the caller's to remove (:func:`mark_objects_removed` once they are): a
    worker still at it finds the task canceled and deletes what it stored. Must run inside
    a transaction."""
    # The row lock first, as every transition takes it: a worker recording a success waits,
    # or has committed and its object is found under the task's prefix.
    status = await con.fetchval(
        """SELECT status FROM media.tasks
           WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL FOR UPDATE""",
        task_id,
        user_id,
    )
    if status is None:
        return False
    if status not in TERMINAL_STATUSES:
        await transition(con, topology, task_id, CANCELED)
    await con.execute("UPDATE media.tasks SET deleted_at = now() WHERE id = $1", task_id)
    await con.execute("DELETE FROM media.idempotency_keys WHERE task_id = $1", task_id)
    # At once, so that no later task copies an object that is about to go.
    await _forget_cached(con, user_id, task_id)
    return True


async def mark_objects_removed(con: asyncpg.Connection, user_id: str, task_id: str) -> None:
    """Record that none of the task's objects is stored any more (nor stands in the source
    cache for another download)."""
    await con.execute("UPDATE media.tasks SET objects_removed_at = now() WHERE id = $1", task_id)
    await _forget_cached(con, user_id, task_id)


async def _forget_cached(con: asyncpg.Connection, user_id: str, task_id: str) -> None:
    await con.execute(
        "DELETE FROM media.source_cache WHERE starts_with(object_key, $1)",
        object_prefix(user_id, task_id),
    )
