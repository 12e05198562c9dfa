"""The worker end to end against the real PostgreSQL, RabbitMQ and SeaweedFS: jobs are
published to the jobs exchange, the consumer runs in-process (``main.run``), sources
come from a local origin on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
from aio_pika.abc import AbstractChannel

from mediaflow_libs import credits, task_transitions, tasks
from mediaflow_libs.amqp import Topology
from mediaflow_libs.contracts import Job
from services.worker.tests.support import (
    MIB,
    SIGNUP_CREDITS,
    TASK_COST,
    Origin,
    Submit,
    Worker,
    at_least,
    collect_until,
    create_task,
    events,
    eventually,
    finished,
    jobs_counted,
    ledger,
    open_uploads,
    own_namespace,
    parts_uploading,
    publish,
    remove_stored,
    running,
    slow_source,
    stored_keys,
    worker_settings,
)


async def test_a_task_is_streamed_to_storage_and_succeeds(
    worker: Worker,
    submit: Submit,
    origin: Origin,
    db_pool: asyncpg.Pool,
    s3: Any,
    channel: AbstractChannel,
    make_mp4: Callable[[int], bytes],
) -> None:
    media = make_mp4(20 * MIB)
    source_sha256 = hashlib.sha256(media).hexdigest()
    user_id = str(uuid.uuid4())
    listener = await channel.declare_queue(exclusive=True, auto_delete=True)
    await listener.bind(worker.topology.events_exchange, routing_key=f"user.{user_id}.#")

    task = await submit(origin.file(media, content_type="video/mp4"), user_id)
    row = await finished(db_pool, task.task_id)

    assert row["status"] == "succeeded"
    assert row["progress"] == 100
    assert row["bytes_done"] == row["bytes_total"] == len(media)
    assert row["attempt"] == 1
    assert row["result_size"] == len(media)
    assert row["result_sha256"] == source_sha256
    assert row["result_content_type"] == "video/mp4"
    key = row["object_key"]
    assert key == f"{task.prefix}1"
    assert row["error_code"] is None

    stored = await s3.get_object(Bucket=worker.settings.s3_bucket, Key=key)
    digest = hashlib.sha256()
    async for piece in stored["Body"].iter_chunks(MIB):
        digest.update(piece)
    assert digest.hexdigest() == source_sha256
    assert stored["ContentType"] == "video/mp4"
    assert stored["Metadata"] == {"sha256": source_sha256}
    assert await open_uploads(s3, worker.settings.s3_bucket, task.prefix) == []
    assert await stored_keys(s3, worker.settings.s3_bucket, task.prefix) == [key]

    history = await events(db_pool, task.task_id)
    statuses = [e["status"] for e in history]
    assert statuses[:2] == ["queued", "running"]
    assert statuses[-1] == "succeeded"
    assert set(statuses[2:-1]) <= {"running"}
    assert history[1]["task"]["progress"] is None  # claimed, the size not known yet
    progress = [e["task"]["progress"] for e in history[2:]]
    assert progress == sorted(progress)
    assert any(e["task"]["bytes_total"] == len(media) for e in history[1:-1])
    result = history[-1]["task"]["result"]
    assert {k: result[k] for k in ("size", "sha256", "content_type")} == {
        "size": len(media),
        "sha256": source_sha256,
        "content_type": "video/mp4",
    }
    # No title: named after the URL's last path segment, with the type's extension.
    assert result["filename"] == task.url.rsplit("/", 1)[1] + ".mp4"
    assert await ledger(db_pool, task.task_id) == [("charge", -TASK_COST)]

    # The relay running inside the worker published the events, ending with success.
    published = await collect_until(listener, "succeeded")
    assert [e.task.status for e in published][:2] == ["queued", "running"]
    assert published[-1].task.result.sha256 == source_sha256
    await remove_stored(s3, worker.settings.s3_bucket, task)


async def test_a_missing_source_fails_and_is_refunded_exactly_once(
    worker: Worker,
    submit: Submit,
    origin: Origin,
    db_pool: asyncpg.Pool,
    channel: AbstractChannel,
) -> None:
    task = await submit(origin.status(404))
    row = await finished(db_pool, task.task_id)

    assert row["status"] == "failed"
    assert row["error_code"] == "source_http_error"
    assert "404" in row["error_message"]
    assert [e["status"] for e in await events(db_pool, task.task_id)] == [
        "queued",
        "running",
        "failed",
    ]
    assert await ledger(db_pool, task.task_id) == [("charge", -TASK_COST), ("refund", TASK_COST)]
    async with db_pool.acquire() as con:
        assert await credits.balance(con, task.user_id) == SIGNUP_CREDITS

    # A second delivery of the same job neither runs it again nor refunds twice.
    skipped = jobs_counted("skipped")
    await publish(channel, worker.topology, task.job)
    await eventually(lambda: at_least(lambda: jobs_counted("skipped"), skipped + 1))
    assert await ledger(db_pool, task.task_id) == [("charge", -TASK_COST), ("refund", TASK_COST)]


async def test_an_html_page_is_not_media(
    worker: Worker,
    submit: Submit,
    origin: Origin,
    db_pool: asyncpg.Pool,
    s3: Any,
) -> None:
    page = b"<!doctype html><html><body>" + b"<p>not a video</p>" * 20000 + b"</body></html>"
    task = await submit(origin.file(page, content_type="video/mp4"))  # the header lies
    row = await finished(db_pool, task.task_id)

    assert row["status"] == "failed"
    assert row["error_code"] == "not_media"
    assert await stored_keys(s3, worker.settings.s3_bucket, task.prefix) == []
    assert await open_uploads(s3, worker.settings.s3_bucket, task.prefix) == []
    assert await ledger(db_pool, task.task_id) == [("charge", -TASK_COST), ("refund", TASK_COST)]


async def test_a_private_destination_is_blocked(submit: Submit, db_pool: asyncpg.Pool) -> None:
    task = await submit("http://169.254.169.254/latest/meta-data/video.mp4")
    row = await finished(db_pool, task.task_id)
    assert row["status"] == "failed"
    assert row["error_code"] == "blocked_destination"


async def test_a_redelivered_job_for_a_finished_task_is_acked_and_changes_nothing(
    worker: Worker,
    submit: Submit,
    origin: Origin,
    db_pool: asyncpg.Pool,
    channel: AbstractChannel,
    s3: Any,
    make_mp4: Callable[[int], bytes],
) -> None:
    task = await submit(origin.file(make_mp4(300_000)))
    before = await finished(db_pool, task.task_id)
    assert before["status"] == "succeeded"
    history = await events(db_pool, task.task_id)
    skipped = jobs_counted("skipped")

    await publish(channel, worker.topology, task.job)
    # A job for a task nobody knows is acked the same way.
    await publish(channel, worker.topology, Job(task_id=str(uuid.uuid4()), user_id=task.user_id))
    await eventually(lambda: at_least(lambda: jobs_counted("skipped"), skipped + 2))
    await asyncio.sleep(0.5)  # an unacked (requeued) delivery would come back by now

    assert jobs_counted("skipped") == skipped + 2
    after = await db_pool.fetchrow("SELECT * FROM media.tasks WHERE id = $1", task.task_id)
    assert dict(after) == dict(before)
    assert len(await events(db_pool, task.task_id)) == len(history)
    queue = await channel.declare_queue(worker.topology.jobs_queue, passive=True)
    assert queue.declaration_result.message_count == 0
    # Both deliveries were settled: with WORKER_PREFETCH=2 unacked ones would block this job.
    follow_up = await submit(origin.file(make_mp4(1000)))
    assert (await finished(db_pool, follow_up.task_id))["status"] == "succeeded"
    await remove_stored(s3, worker.settings.s3_bucket, task, follow_up)


async def test_a_task_canceled_mid_transfer_stops_and_leaves_nothing_behind(
    worker: Worker,
    submit: Submit,
    origin: Origin,
    db_pool: asyncpg.Pool,
    s3: Any,
    make_mp4: Callable[[int], bytes],
) -> None:
    canceled = jobs_counted("canceled")
    media = make_mp4(30 * MIB)
    task = await submit(slow_source(origin, media))
    await eventually(lambda: parts_uploading(db_pool, s3, worker.settings, task))
    async with db_pool.acquire() as con, con.transaction():  # what the gateway's cancel does
        assert await task_transitions.transition(con, worker.topology, task.task_id, tasks.CANCELED)
    await eventually(lambda: at_least(lambda: jobs_counted("canceled"), canceled + 1))

    row = await db_pool.fetchrow("SELECT * FROM media.tasks WHERE id = $1", task.task_id)
    assert row["status"] == "canceled"
    assert row["bytes_done"] < len(media)
    assert (await events(db_pool, task.task_id))[-1]["status"] == "canceled"
    assert await open_uploads(s3, worker.settings.s3_bucket, task.prefix) == []
    assert await stored_keys(s3, worker.settings.s3_bucket, task.prefix) == []
    assert await ledger(db_pool, task.task_id) == [("charge", -TASK_COST), ("refund", TASK_COST)]


async def test_health_readiness_metrics_and_diagnostics_are_served(worker: Worker) -> None:
    async with httpx.AsyncClient(base_url=worker.base_url) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).json() == {"status": "ready"}
        metrics = (await client.get("/metrics")).text
        facts = (await client.get("/diagnostics")).json()
    assert facts["amqp_namespace"] == worker.settings.amqp_namespace
    assert "service_secret" not in facts
    for name in (
        "worker_jobs_total",
        "worker_failures_total",
        "worker_stage_duration_seconds_bucket",
        "worker_bytes_streamed_total",
        "worker_jobs_in_flight",
    ):
        assert name in metrics


async def test_on_stop_a_job_in_flight_finishes_before_the_worker_exits(
    infra: Any,
    db_pool: asyncpg.Pool,
    channel: AbstractChannel,
    origin: Origin,
    s3: Any,
    make_mp4: Callable[[int], bytes],
) -> None:
    settings = worker_settings(infra, shutdown_grace_seconds=30)
    media = make_mp4(30 * MIB)
    stop = asyncio.Event()
    async with (
        own_namespace(infra, db_pool, Topology(settings.amqp_namespace)),
        running(settings, stop) as draining,
    ):
        task = await create_task(db_pool, channel, draining.topology, slow_source(origin, media))
        await eventually(lambda: parts_uploading(db_pool, s3, settings, task))
        stop.set()  # what SIGTERM does
        await draining.running
        row = await db_pool.fetchrow("SELECT * FROM media.tasks WHERE id = $1", task.task_id)
        assert row["status"] == "succeeded"
        assert row["result_sha256"] == hashlib.sha256(media).hexdigest()
    await s3.delete_object(Bucket=settings.s3_bucket, Key=row["object_key"])


async def test_a_job_cut_off_by_shutdown_goes_back_to_the_queue_and_is_retried(
    infra: Any,
    db_pool: asyncpg.Pool,
    channel: AbstractChannel,
    origin: Origin,
    s3: Any,
    make_mp4: Callable[[int], bytes],
) -> None:
    settings = worker_settings(infra, shutdown_grace_seconds=0)
    topology = Topology(settings.amqp_namespace)
    media = make_mp4(30 * MIB)
    async with own_namespace(infra, db_pool, topology):
        stop = asyncio.Event()
        async with running(settings, stop) as first:
            task = await create_task(db_pool, channel, topology, slow_source(origin, media))
            await eventually(lambda: parts_uploading(db_pool, s3, settings, task))
            stop.set()
            await first.running

        row = await db_pool.fetchrow("SELECT * FROM media.tasks WHERE id = $1", task.task_id)
        assert row["status"] == "running"  # neither failed nor refunded: it runs again
        assert row["lease_owner"] is None  # given back: the next worker need not wait
        assert await ledger(db_pool, task.task_id) == [("charge", -TASK_COST)]
        assert await open_uploads(s3, settings.s3_bucket, task.prefix) == []

        async def back_in_queue() -> bool:
            queue = await channel.declare_queue(topology.jobs_queue, passive=True)
            return queue.declaration_result.message_count == 1

        await eventually(back_in_queue, within=10)

        async with running(settings, asyncio.Event()):
            row = await finished(db_pool, task.task_id)
        assert row["status"] == "succeeded"
        assert row["attempt"] == 2
        assert row["result_sha256"] == hashlib.sha256(media).hexdigest()
        statuses = [e["status"] for e in await events(db_pool, task.task_id)]
        assert statuses[:2] == ["queued", "running"]
        assert statuses[-1] == "succeeded"
        assert await stored_keys(s3, settings.s3_bucket, task.prefix) == [f"{task.prefix}2"]
    await remove_stored(s3, settings.s3_bucket, task)
