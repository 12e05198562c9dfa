"""Running tasks nobody holds any more: queued again, or failed after their last attempt."""

from __future__ import annotations

import structlog

from mediaflow_libs import outbox, tasks
from mediaflow_libs.contracts import Job
from mediaflow_worker import journal, lease
from mediaflow_worker.errors import TaskFailure
from mediaflow_worker.metrics import FAILURES, TASKS_REAPED
from mediaflow_worker.outcome import record_failure
from mediaflow_worker.resources import Delivery, Resources

log = structlog.get_logger(__name__)


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
        failed: list[Job] = []
        # Failing a task takes its user's event lock: users in one order, so two reapers
        # running at once cannot each hold a lock the other waits for.
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
            used = await lease.attempts_used(con, str(row["id"]))
            if used >= settings.retry_max_attempts:
                failure = TaskFailure("internal", "The task stopped making progress.")
                if await record_failure(con, delivery, resources, failure, row["attempt"]):
                    failed.append(job)
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
    for job in failed:
        await journal.discard_task(
            resources.pool, resources.s3, settings.s3_bucket, job.user_id, job.task_id
        )
    for action in actions:
        TASKS_REAPED.labels(action).inc()
        if action == "failed":
            FAILURES.labels("internal").inc()
    if rows:
        log.warning("worker.stale_tasks_reaped", tasks=len(rows))
    return len(rows)
