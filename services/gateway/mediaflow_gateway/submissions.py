"""Task submissions: charged, each with its first event and its job in the outbox, written
in batches of those that arrive together."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
from prometheus_client import Histogram

from mediaflow_libs import db, telemetry
from mediaflow_libs.amqp import Topology
from mediaflow_libs.contracts import Job
from mediaflow_libs.task_transitions import EVENT_HEADERS, event_arguments
from mediaflow_libs.task_view import Task as TaskView
from mediaflow_libs.task_view import task_view
from mediaflow_libs.tasks import QUEUED, job_options, stored_options, task_message

SUBMISSION_BATCH_SIZE = Histogram(
    "task_submission_batch_size",
    "Task submissions written to the database in one transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)


SubmitOutcome = Literal[
    "accepted", "replayed", "idempotency_conflict", "rate_limited", "insufficient_credits"
]


@dataclass(frozen=True)
class Submission:
    outcome: SubmitOutcome
    task: TaskView | None = None  # accepted, replayed
    retry_after: int | None = None  # seconds (rate_limited)


@dataclass(frozen=True)
class _Prepared:
    """One submission as ``media.submit_tasks`` takes it, built in the request's context
    (its trace, its clock)."""

    user_id: str
    idempotency_key: str | None
    request_hash: bytes | None
    row: dict[str, Any]  # the new task row as JSON, id included
    snapshot: TaskView
    job_body: bytes
    job_headers: dict[str, Any]
    event_routing_key: str

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
        snapshot, _, event_routing_key, _ = event_arguments(self._topology, row)
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
        outcomes: Sequence[Submission | BaseException]
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

    async def _submit_all(self, con: db.Connection, batch: list[_Prepared]) -> list[Submission]:
        try:
            rows = await con.fetch(
                """SELECT item, outcome, retry_after, task_id FROM media.submit_tasks(
                       $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
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
                EVENT_HEADERS,
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
                answers.append(Submission(outcome, task_view(earlier)))
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
