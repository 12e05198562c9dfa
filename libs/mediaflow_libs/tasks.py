"""The task aggregate: its public JSON, and every status change in one place.

A change updates the task row, appends a task event and puts the event in the
outbox, all in the caller's transaction; a task ending ``failed`` or ``canceled``
is refunded in that same transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter

from mediaflow_libs import credits, telemetry
from mediaflow_libs.amqp import Topology
from mediaflow_libs.contracts import Job, Task, TaskError, TaskEvent, TaskResult

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
    }
)

TRANSITIONS = Counter("task_transitions_total", "Task status changes", ["from_status", "to_status"])
TRANSITIONS_REFUSED = Counter(
    "task_transitions_refused_total", "Illegal task status changes refused", ["to_status"]
)


def sources_of(target: str) -> list[str]:
    """The statuses a task may move to ``target`` from."""
    return sorted(src for src, targets in LEGAL_TRANSITIONS.items() if target in targets)


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def task_message(row: asyncpg.Record) -> Task:
    task = Task(
        id=str(row["id"]),
        user_id=str(row["user_id"]),
        status=row["status"],
        bytes_done=row["bytes_done"],
        source_url=row["source_url"],
        attempt=row["attempt"],
        created_at=_timestamp(row["created_at"]),
        updated_at=_timestamp(row["updated_at"]),
    )
    if row["progress"] is not None:
        task.progress = row["progress"]
    if row["bytes_total"] is not None:
        task.bytes_total = row["bytes_total"]
    if row["error_code"] is not None:
        task.error.CopyFrom(TaskError(code=row["error_code"], message=row["error_message"] or ""))
    if row["status"] == SUCCEEDED and row["result_sha256"] is not None:
        task.result.CopyFrom(
            TaskResult(
                size=row["result_size"],
                sha256=row["result_sha256"],
                content_type=row["result_content_type"] or "application/octet-stream",
            )
        )
    return task


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
        "result": {
            "size": task.result.size,
            "sha256": task.result.sha256,
            "content_type": task.result.content_type,
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


async def submit(
    con: asyncpg.Connection,
    topology: Topology,
    *,
    user_id: str,
    source_url: str,
    cost: int,
    signup_credits: int,
    submits_per_window: int,
    window_seconds: int,
    idempotency_key: str | None = None,
    request_hash: bytes | None = None,
) -> Submission:
    """Create a task, charged, with its first event and its job in the outbox; or refuse,
    writing nothing. One statement (``media.submit_task``), so one round trip: the task's
    id and timestamps are chosen here, which lets its messages be built before it."""
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
        "cost": cost,
        "error_code": None,
        "error_message": None,
        "object_key": None,
        "result_size": None,
        "result_sha256": None,
        "result_content_type": None,
        "created_at": now,
        "updated_at": now,
    }
    task = task_message(row)
    job = Job(task_id=task.id, user_id=user_id, source_url=source_url, requested_at=task.created_at)
    snapshot, *event = _event_arguments(topology, task)
    answer = await con.fetchrow(
        """SELECT outcome, retry_after, task_id FROM media.submit_task(
               $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)""",
        row | {"created_at": now.isoformat(), "updated_at": now.isoformat()},
        snapshot,
        idempotency_key,
        request_hash,
        signup_credits,
        submits_per_window,
        window_seconds,
        topology.jobs_exchange,
        topology.job_routing_key(),
        job.SerializeToString(),
        # The worker's span continues this request's trace.
        telemetry.inject_trace_context({"message_type": "mediaflow.v1.Job"}),
        *event,
    )
    assert answer is not None
    outcome: SubmitOutcome = answer["outcome"]
    if outcome == "accepted":
        return Submission(outcome, snapshot)
    if outcome == "replayed":
        earlier = await con.fetchrow("SELECT * FROM media.tasks WHERE id = $1", answer["task_id"])
        return Submission(outcome, task_json(task_message(earlier)))
    return Submission(outcome, retry_after=answer["retry_after"])


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
