"""The sweep of stored files: results past their ``result_expires_at`` and tasks their owner
deleted whose objects the delete could not remove (the store did not answer then).

Every worker runs it beside the reaper; replicas share the work without meeting, each taking
rows the others have not locked (``FOR UPDATE SKIP LOCKED``). A row stays locked while its
objects are deleted and is marked ``objects_removed_at`` in the same transaction, so no two
sweeps remove one task's objects and a failed removal is tried again at the next pass.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from mediaflow_libs import task_transitions, tasks
from mediaflow_libs.s3 import delete_prefix
from mediaflow_worker.metrics import STORED_FILES_REMOVED

log = structlog.get_logger(__name__)

BATCH = 100


async def sweep_stored_files(
    pool: asyncpg.Pool, s3: Any, bucket: str, now: datetime | None = None, batch: int = BATCH
) -> int:
    """Remove one batch of due objects; returns how many tasks it cleared. ``now`` is the
    clock the expiry is judged by (a test moves it forward)."""
    moment = now or datetime.now(UTC)
    async with pool.acquire() as con, con.transaction():
        rows = await con.fetch(
            """SELECT id, user_id, deleted_at IS NOT NULL AS deleted FROM media.tasks
               WHERE objects_removed_at IS NULL
                 AND (deleted_at IS NOT NULL OR result_expires_at <= $1)
               LIMIT $2 FOR UPDATE SKIP LOCKED""",
            moment,
            batch,
        )
        cleared = 0
        for row in rows:
            task_id, user_id = str(row["id"]), str(row["user_id"])
            try:
                await delete_prefix(s3, bucket, tasks.object_prefix(user_id, task_id))
            except Exception as exc:
                log.warning("sweep.objects_not_removed", task_id=task_id, error=repr(exc))
                continue
            await task_transitions.mark_objects_removed(con, user_id, task_id)
            STORED_FILES_REMOVED.labels("deleted" if row["deleted"] else "expired").inc()
            cleared += 1
    if cleared:
        log.info("sweep.stored_files_removed", tasks=cleared)
    return cleared
