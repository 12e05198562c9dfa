"""The lease on a task row: who works on the task, until when.

A job claims its task by writing a fresh token and an expiry into the row (in the same
transaction as the move to ``running``), renews the expiry on a heartbeat while it works,
and clears it when it records the outcome. Every write a job makes checks the token first,
so a task is never worked on by two jobs at once: a second delivery of a held task waits
(in a delay queue) until the holder finishes or its lease runs out, which is how a dead
worker's task passes to another worker. The heartbeat doubles as the cancel check: it
reads the task's status, so a cancel is noticed within one heartbeat even when the source
stalls and no progress is being written.

Attempts count toward ``RETRY_MAX_ATTEMPTS`` only when they stored nothing new
(:func:`attempts_used`): one that added parts to the task's recorded upload moved the task
forward, and the parts are finite, so a transfer whose workers keep dying still ends.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import asyncpg
import structlog

from mediaflow_libs import db, tasks

log = structlog.get_logger(__name__)

T = TypeVar("T")
# Names the process in lease tokens, so a stuck lease points at the worker that holds it.
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


class TaskWithdrawn(Exception):
    """The task left ``running`` while we worked on it (the user canceled it)."""


class LeaseLost(Exception):
    """Another job holds the task now (ours ran out while we could not renew it)."""


@dataclass(frozen=True)
class Claimed:
    user_id: str
    source_url: str
    attempt: int
    token: str


@dataclass(frozen=True)
class Held:
    """Another job holds the task, or its retry is not due yet, for ``seconds`` more."""

    seconds: float


@dataclass(frozen=True)
class Exhausted:
    """The task is running but its attempts are used up (its workers kept dying before
    they stored anything new)."""

    user_id: str
    attempt: int


async def claim(
    con: db.Connection, task_id: str, max_attempts: int, lease_seconds: float
) -> Claimed | Held | Exhausted | None:
    """Decide what a delivery of the task's job does; on :class:`Claimed` the task is ours,
    locked until the caller's transaction ends. None: the task ended or is unknown."""
    row = await con.fetchrow(
        """SELECT user_id, source_url, status, attempt,
                  extract(epoch FROM lease_expires_at - now())::float8 AS held_for
           FROM media.tasks WHERE id = $1 FOR UPDATE""",
        task_id,
    )
    if row is None or row["status"] in tasks.TERMINAL_STATUSES:
        return None
    if row["held_for"] is not None and row["held_for"] > 0:
        return Held(row["held_for"])
    used, progressed, kept = await _attempts(con, task_id)
    if used >= max_attempts:
        return Exhausted(str(row["user_id"]), row["attempt"])
    token = f"{WORKER_ID}/{uuid.uuid4().hex[:12]}"
    await con.execute(
        """UPDATE media.tasks SET lease_owner = $2,
               lease_expires_at = now() + make_interval(secs => $3)
           WHERE id = $1""",
        task_id,
        token,
        lease_seconds,
    )
    await con.execute(
        """UPDATE media.task_uploads SET attempts_with_progress = $2, kept_bytes_at_claim = $3
           WHERE task_id = $1""",
        task_id,
        progressed,
        kept,
    )
    return Claimed(str(row["user_id"]), row["source_url"], row["attempt"] + 1, token)


async def attempts_used(con: db.Connection, task_id: str) -> int:
    """The task's attempts that count toward the limit: those that stored nothing new."""
    used, _, _ = await _attempts(con, task_id)
    return used


async def _attempts(con: db.Connection, task_id: str) -> tuple[int, int, int]:
    """(attempts used, attempts that stored something new, bytes in the recorded upload's
    parts now). The attempt last claimed stored something new when the recorded upload
    holds more than when it began, however it ended (a worker killed midway never says)."""
    row = await con.fetchrow(
        """SELECT t.attempt, coalesce(u.attempts_with_progress, 0) AS attempts_with_progress,
                  coalesce(u.kept_bytes_at_claim, 0) AS kept_bytes_at_claim,
                  (SELECT coalesce(max(p.last_byte) + 1, 0) FROM media.task_upload_parts p
                   WHERE p.task_id = t.id) AS kept
           FROM media.tasks t LEFT JOIN media.task_uploads u ON u.task_id = t.id
           WHERE t.id = $1""",
        task_id,
    )
    assert row is not None  # callers hold the task's row
    kept = int(row["kept"])
    progressed = row["attempts_with_progress"] + int(
        row["attempt"] > 0 and kept > row["kept_bytes_at_claim"]
    )
    return row["attempt"] - progressed, progressed, kept


async def holds(con: db.Connection, task_id: str, token: str) -> bool:
    """Whether ``token`` still holds the task; locks the row until the transaction ends."""
    owner = await con.fetchval(
        "SELECT lease_owner FROM media.tasks WHERE id = $1 FOR UPDATE", task_id
    )
    return bool(owner == token)


async def release(con: db.Connection, task_id: str, token: str, *, for_seconds: float = 0) -> None:
    """Give the task up; with ``for_seconds``, nobody may claim it before then (a retry
    waiting in a delay queue)."""
    await con.execute(
        """UPDATE media.tasks SET lease_owner = NULL,
               lease_expires_at = now() + make_interval(secs => $3)
           WHERE id = $1 AND lease_owner = $2""",
        task_id,
        token,
        for_seconds,
    )


@dataclass
class Lease:
    """A claimed task's lease, kept alive by :meth:`hold_while`."""

    pool: asyncpg.Pool
    task_id: str
    token: str
    lease_seconds: float
    heartbeat_seconds: float

    async def hold_while(self, work: Awaitable[T]) -> T:
        """Run ``work`` while renewing the lease; cancel it and raise :class:`TaskWithdrawn`
        or :class:`LeaseLost` as soon as a heartbeat finds the task canceled or taken."""
        job = asyncio.ensure_future(work)
        watch = asyncio.create_task(self._heartbeat())
        try:
            await asyncio.wait({job, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Cancelled from outside (shutdown), or one of the two ended: stop the other
            # and wait for it, so the job's upload is aborted before we go on.
            for running in (job, watch):
                if not running.done():
                    running.cancel()
            await asyncio.gather(job, watch, return_exceptions=True)
        if not job.cancelled() and job.exception() is None:
            return job.result()
        stopped_by = None if watch.cancelled() else watch.exception()
        if stopped_by is not None:
            raise stopped_by
        return job.result()  # re-raises the job's own failure

    async def _heartbeat(self) -> NoReturn:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                async with self.pool.acquire(timeout=self.heartbeat_seconds) as con:
                    status = await con.fetchval(
                        """UPDATE media.tasks
                           SET lease_expires_at = now() + make_interval(secs => $3)
                           WHERE id = $1 AND lease_owner = $2 RETURNING status""",
                        self.task_id,
                        self.token,
                        self.lease_seconds,
                    )
            except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
                # Keep working: the lease outlasts a few missed beats, and every write of
                # the outcome checks the token anyway.
                log.warning("lease.heartbeat_failed", error=repr(exc))
                continue
            if status is None:
                raise LeaseLost
            if status != tasks.RUNNING:
                raise TaskWithdrawn
