"""Every status change of a task in one place.

A change updates the task row, appends a task event and puts the event in the
outbox, all in the caller's transaction; a task ending ``failed`` or ``canceled``
is refunded in that same transaction.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter

from mediaflow_libs import credits, db
from mediaflow_libs.amqp import Topology
from mediaflow_libs.task_view import task_view
from mediaflow_libs.tasks import (
    CANCELED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL_STATUSES,
    object_prefix,
)

log = structlog.get_logger(__name__)

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

TRANSITIONS = Counter("task_transitions_total", "Task status changes", ["from_status", "to_status"])
TRANSITIONS_REFUSED = Counter(
    "task_transitions_refused_total", "Illegal task status changes refused", ["to_status"]
)


def sources_of(target: str) -> list[str]:
    """The statuses a task may move to ``target`` from."""
    return sorted(src for src, targets in LEGAL_TRANSITIONS.items() if target in targets)


EVENT_HEADERS = {"message_type": "mediaflow.v1.TaskEvent"}


def event_arguments(topology: Topology, row: Any) -> tuple[Any, ...]:
    """``media.record_task_event``'s arguments after the task's id, user and status: the
    snapshot (the task row as API.md shows it) and where its message goes (the relay builds
    the message from the event)."""
    return (
        task_view(row),
        topology.events_exchange,
        topology.event_routing_key(str(row["user_id"]), str(row["id"])),
        EVENT_HEADERS,
    )


async def record_event(con: db.Connection, topology: Topology, row: Any) -> int:
    """Append the task's current state as an event and queue it for publishing."""
    event_id: int = await con.fetchval(
        "SELECT media.record_task_event($1, $2, $3, $4, $5, $6, $7)",
        row["id"],
        row["user_id"],
        row["status"],
        *event_arguments(topology, row),
    )
    return event_id


async def transition(
    con: db.Connection,
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


async def delete(con: db.Connection, topology: Topology, task_id: str, user_id: str) -> bool:
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


async def mark_objects_removed(con: db.Connection, user_id: str, task_id: str) -> None:
    """Record that none of the task's objects is stored any more (nor stands in the source
    cache for another download)."""
    await con.execute("UPDATE media.tasks SET objects_removed_at = now() WHERE id = $1", task_id)
    await _forget_cached(con, user_id, task_id)


async def _forget_cached(con: db.Connection, user_id: str, task_id: str) -> None:
    await con.execute(
        "DELETE FROM media.source_cache WHERE starts_with(object_key, $1)",
        object_prefix(user_id, task_id),
    )
