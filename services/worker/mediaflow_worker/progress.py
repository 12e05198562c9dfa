"""A running job's progress, as the task shows it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from mediaflow_libs import db, task_transitions, tasks
from mediaflow_worker import journal, lease
from mediaflow_worker.lease import LeaseLost, TaskWithdrawn
from mediaflow_worker.metrics import BYTES_STREAMED
from mediaflow_worker.resources import DB_ERRORS, Resources

log = structlog.get_logger(__name__)


@dataclass
class Progress:
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
                row = await task_transitions.transition(
                    con,
                    self.resources.topology,
                    self.task_id,
                    tasks.RUNNING,
                    bytes_done=done,
                    bytes_total=self.total,
                    progress=percent,
                )
        except DB_ERRORS as exc:
            # Progress is advisory: a database hiccup must not fail a healthy download.
            log.warning("job.progress_not_recorded", error=repr(exc))
            return
        if row is None:
            raise TaskWithdrawn


async def kept_progress(con: db.Connection, task_id: str) -> dict[str, Any]:
    """A new attempt's progress: where the recorded upload stands (bytes_done never goes
    back on a transfer that goes on), else unknown (API.md: null until the size is known)."""
    kept = await journal.kept_bytes(con, task_id)
    if kept is None or kept[0] == 0:
        return {"progress": None, "bytes_done": 0, "bytes_total": None}
    shown = await con.fetchrow(
        "SELECT bytes_done, progress FROM media.tasks WHERE id = $1", task_id
    )
    # A dead worker may have shown bytes it never stored: those are not taken back.
    assert shown is not None  # the upload's row is the task's
    done, total = max(kept[0], shown["bytes_done"] or 0), kept[1]
    if total is None:
        # A segmented stream: its progress is by segments, and goes on from where it was.
        return {"progress": shown["progress"], "bytes_done": done, "bytes_total": None}
    return {"progress": min(done * 100 // total, 99), "bytes_done": done, "bytes_total": total}
