"""Retries, permanent failures, cancel, the cache, refused transitions, leases, the reaper
and tracing, against the real PostgreSQL, RabbitMQ and SeaweedFS."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from itertools import pairwise
from typing import Any

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel
from aiohttp import web
from botocore.exceptions import ClientError
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devstack import stack
from mediaflow_libs import credits, outbox, task_transitions, tasks
from mediaflow_libs.amqp import Topology
from mediaflow_libs.contracts import Job
from mediaflow_libs.telemetry import inject_trace_context
from mediaflow_worker import job_run, lease, multipart, outcome
from mediaflow_worker.settings import WorkerSettings
from services.worker.tests.support import (
    MIB,
    SIGNUP_CREDITS,
    TASK_COST,
    Origin,
    Submit,
    Submitted,
    Worker,
    at_least,
    counted,
    create_task,
    events,
    eventually,
    finished,
    jobs_counted,
    ledger,
    open_uploads,
    own_namespace,
    progress_unknown_without_size,
    publish,
    remove_stored,
    running,
    slow_source,
    stored_keys,
    worker_settings,
)

MakeMedia = Callable[[int], bytes]


def flaky(origin: Origin, media: bytes, failures: list[web.Response]) -> tuple[str, list[float]]:
    """A source that answers with ``failures`` first, then with ``media``; and the times
    of the requests it saw."""
    seen: list[float] = []

    async def handler(_: web.Request) -> web.StreamResponse:
        seen.append(time.monotonic())
        if len(seen) <= len(failures):
            return failures[len(seen) - 1]
        return web.Response(body=media, content_type="video/mp4")

    return origin.add(handler), seen


# --- transient failures ---------------------------------------------------------------------


async def test_an_overloaded_source_is_retried_after_its_retry_after_until_it_answers(
    worker: Worker,
    submit: Submit,
    origin: Origin,
    db_pool: asyncpg.Pool,
    s3: Any,
    make_mp4: MakeMedia,
) -> None:
    media = make_mp4(200_000)
    url, seen = flaky(
        origin,
        media,
        [web.Response(status=503, headers={"Retry-After": "1"}), web.Response(status=429)],
    )
    retries = counted("worker_retries_total", code="source_http_error")
    task = await submit(url)
    row = await finished(db_pool, task.task_id)

    assert row["status"] == "succeeded"
    assert row["result_sha256"] == hashlib.sha256(media).hexdigest()
    assert row["attempt"] == 3
    assert len(seen) == 3
    assert seen[1] - seen[0] >= 1.0  # Retry-After honoured
    assert counted("worker_retries_total", code="source_http_error") == retries + 2
    history = await events(db_pool, task.task_id)
    attempts = [e["task"]["attempt"] for e in history if e["status"] == "running"]
    assert attempts == sorted(attempts)
    assert {1, 2, 3} <= set(attempts)  # each new attempt is a running→running change
    assert progress_unknown_without_size(history)  # each retry forgets the size too
    assert [e["status"] for e in history][-1] == "succeeded"
    assert await ledger(db_pool, task.task_id) == [("charge", -TASK_COST)]
    assert await stored_keys(s3, worker.settings.s3_bucket, task.prefix) == [f"{task.prefix}3"]
    await remove_stored(s3, worker.settings.s3_bucket, task)


async def test_a_source_that_stays_down_fails_after_its_attempts_and_is_dead_lettered(
    worker: Worker, submit: Submit, origin: Origin, db_pool: asyncpg.Pool, channel: AbstractChannel
) -> None:
    failed = counted("worker_failures_total", code="source_http_error")
    task = await submit(origin.status(502))
    row = await finished(db_pool, task.task_id)

    assert row["status"] == "failed"
    assert row["error_code"] == "source_http_error"
    assert row["attempt"] == worker.settings.retry_max_attempts
    assert await ledger(db_pool, task.task_id) == [("charge", -TASK_COST), ("refund", TASK_COST)]
    assert counted("worker_failures_total", code="source_http_error") == failed + 1

    copy = await dead_lettered(channel, worker.topology, task.task_id)
    assert copy.headers["x-mediaflow-error-code"] == "source_http_error"
    assert copy.headers["x-mediaflow-attempt"] == worker.settings.retry_max_attempts


async def dead_lettered(
    channel: AbstractChannel, topology: Topology, task_id: str
) -> aio_pika.abc.AbstractIncomingMessage:
    queue = await channel.get_queue(topology.dead_letter_queue)
    for _ in range(100):
        message = await queue.get(fail=False, no_ack=True)
        if message is None:
            await asyncio.sleep(0.05)
        elif Job.FromString(message.body).task_id == task_id:
            return message
    raise AssertionError(f"no dead-lettered job for {task_id}")


@pytest.mark.parametrize("kind", ["refused", "silent"])
async def test_network_trouble_is_retried_then_fails_with_its_code(
    worker: Worker, submit: Submit, origin: Origin, db_pool: asyncpg.Pool, kind: str
) -> None:
    async def silent(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(10)  # longer than the worker's read timeout
        return web.Response()

    url = f"http://127.0.0.1:{stack.free_port()}/v.mp4" if kind == "refused" else origin.add(silent)
    code = "source_unreachable" if kind == "refused" else "source_timeout"
    retries = counted("worker_retries_total", code=code)
    row = await finished(db_pool, (await submit(url)).task_id)
    assert (row["status"], row["error_code"]) == ("failed", code)
    assert row["attempt"] == worker.settings.retry_max_attempts
    assert counted("worker_retries_total", code=code) == retries + 2


async def test_a_storage_hiccup_is_retried(
    worker: Worker,
    submit: Submit,
    origin: Origin,
    db_pool: asyncpg.Pool,
    s3: Any,
    make_mp4: MakeMedia,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store answers SlowDown to the first upload: classified transient (the pipeline's
    classification itself is covered in test_stream), retried, stored on attempt 2."""
    real = multipart.storage_call
    slowed = []

    async def slow_down_once(method: Any, **kwargs: Any) -> Any:
        if method.__name__ == "create_multipart_upload" and not slowed:
            slowed.append(kwargs["Key"])
            error = {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}

            async def refuse(**_: Any) -> Any:
                raise ClientError(error, "CreateMultipartUpload")

            refuse.__name__ = method.__name__
            return await real(refuse, **kwargs)
        return await real(method, **kwargs)

    monkeypatch.setattr(multipart, "storage_call", slow_down_once)
    task = await submit(origin.file(make_mp4(100_000)))
    row = await finished(db_pool, task.task_id)
    assert (row["status"], row["attempt"]) == ("succeeded", 2)
    assert slowed == [f"{task.prefix}1"]
    await remove_stored(s3, worker.settings.s3_bucket, task)


# --- permanent failures -----------------------------------------------------------------------


async def test_permanent_failures_fail_at_once_and_are_refunded(
    worker: Worker, submit: Submit, origin: Origin, db_pool: asyncpg.Pool, s3: Any
) -> None:
    async def too_big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(65 * MIB)})
        await response.prepare(request)
        return response

    page = b"<!doctype html><html><body><p>no video here</p></body></html>"
    cases = {
        "source_http_error": origin.status(404),
        "not_media": origin.file(b"just some text, " * 1000, content_type="text/plain"),
        "too_large": origin.add(too_big),
        "blocked_destination": "http://[::ffff:169.254.169.254]/latest/meta-data/",
    }
    retries = counted("worker_retries_total", code="source_http_error")
    submitted = {code: await submit(url) for code, url in cases.items()}
    submitted["not_media (a page)"] = await submit(origin.file(page, content_type="text/html"))
    for label, task in submitted.items():
        row = await finished(db_pool, task.task_id)
        assert (row["status"], row["error_code"], row["attempt"]) == (
            "failed",
            label.split(" ")[0],
            1,
        ), label
        assert await ledger(db_pool, task.task_id) == [
            ("charge", -TASK_COST),
            ("refund", TASK_COST),
        ]
        assert await stored_keys(s3, worker.settings.s3_bucket, task.prefix) == []
        assert await open_uploads(s3, worker.settings.s3_bucket, task.prefix) == []
        # Most end before any size is known, and then without a progress.
        assert progress_unknown_without_size(await events(db_pool, task.task_id)), label
    assert counted("worker_retries_total", code="source_http_error") == retries


# --- pages ----------------------------------------------------------------------------------


async def test_a_page_is_resolved_to_the_media_it_names(
    worker: Worker,
    submit: Submit,
    origin: Origin,
    db_pool: asyncpg.Pool,
    s3: Any,
    make_mp4: MakeMedia,
) -> None:
    media = make_mp4(150_000)
    target = origin.file(media)
    page = origin.file(
        f'<html><head><meta property="og:video" content="{target}"></head></html>'.encode(),
        content_type="text/html",
    )
    task = await submit(page)
    row = await finished(db_pool, task.task_id)
    assert row["status"] == "succeeded"
    assert row["result_sha256"] == hashlib.sha256(media).hexdigest()
    assert row["source_url"] == page
    await remove_stored(s3, worker.settings.s3_bucket, task)


# --- progress -------------------------------------------------------------------------------


async def test_progress_is_written_at_most_every_interval_and_every_percent(
    worker: Worker,
    submit: Submit,
    origin: Origin,
    db_pool: asyncpg.Pool,
    s3: Any,
    make_mp4: MakeMedia,
) -> None:
    media = make_mp4(12 * MIB)  # about a second from the slow source
    task = await submit(slow_source(origin, media))
    assert (await finished(db_pool, task.task_id))["status"] == "succeeded"
    history = await events(db_pool, task.task_id)
    statuses = [e["status"] for e in history]
    assert statuses[:2] == ["queued", "running"]  # every status change is an event
    assert statuses[-1] == "succeeded"
    updates = history[2:-1]  # the progress updates between the claim and the end
    assert 3 <= len(updates) <= 1 / worker.settings.progress_interval_seconds * 5
    for before, after in pairwise(updates):
        assert after["task"]["progress"] - before["task"]["progress"] >= 1
    # At most one write per interval: counted over the whole run rather than pair by pair,
    # because each write's timestamp is taken by the database a little after the worker
    # decided on it (a loaded machine moves single gaps, not the count).
    span = datetime.fromisoformat(history[-1]["task"]["updated_at"]) - datetime.fromisoformat(
        history[1]["task"]["updated_at"]
    )
    assert len(updates) <= span.total_seconds() / worker.settings.progress_interval_seconds + 1
    await remove_stored(s3, worker.settings.s3_bucket, task)


async def test_progress_is_null_while_the_size_is_unknown(
    worker: Worker,
    submit: Submit,
    origin: Origin,
    db_pool: asyncpg.Pool,
    s3: Any,
    make_mp4: MakeMedia,
) -> None:
    media = make_mp4(4 * MIB)

    async def unannounced(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # no Content-Length: chunked
        await response.prepare(request)
        for start in range(0, len(media), 256 * 1024):
            await response.write(media[start : start + 256 * 1024])
            await asyncio.sleep(0.03)
        return response

    task = await submit(origin.add(unannounced))
    row = await finished(db_pool, task.task_id)
    assert row["status"] == "succeeded"
    assert (row["progress"], row["bytes_total"]) == (100, len(media))
    history = await events(db_pool, task.task_id)
    updates = [e["task"] for e in history if e["status"] == "running"]
    assert len(updates) >= 3  # the claim and progress updates, all without a size
    assert {(t["progress"], t["bytes_total"]) for t in updates} == {(None, None)}
    assert updates[-1]["bytes_done"] > 0
    await remove_stored(s3, worker.settings.s3_bucket, task)


# --- cancel ---------------------------------------------------------------------------------


async def test_a_cancel_is_noticed_within_two_seconds_while_the_source_stalls(
    infra: Any,
    origin: Origin,
    db_pool: asyncpg.Pool,
    channel: AbstractChannel,
    s3: Any,
    make_mp4: MakeMedia,
) -> None:
    media = make_mp4(12 * MIB)
    hung_up = asyncio.Event()

    async def stalls(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(media) * 2)})
        await response.prepare(request)
        await response.write(media)  # a part and a half, then silence
        try:
            for _ in range(600):  # silent for up to 30 s, until the worker hangs up
                if request.transport is None or request.transport.is_closing():
                    break
                await asyncio.sleep(0.05)
        finally:
            hung_up.set()
        return response

    # The shipped heartbeat and read timeout, not the module worker's short ones: the
    # two-second promise is about the defaults.
    defaults = {
        name: WorkerSettings.model_fields[name].default
        for name in ("lease_seconds", "lease_heartbeat_seconds", "fetch_read_timeout_seconds")
    }
    settings = worker_settings(infra, **defaults)
    async with (
        own_namespace(infra, db_pool, Topology(settings.amqp_namespace)),
        running(settings, asyncio.Event()) as worker,
    ):
        canceled = jobs_counted("canceled")
        task = await create_task(db_pool, channel, worker.topology, origin.add(stalls))
        await eventually(lambda: uploading(db_pool, s3, worker, task))
        async with db_pool.acquire() as con, con.transaction():  # the gateway's cancel
            assert await task_transitions.transition(
                con, worker.topology, task.task_id, tasks.CANCELED
            )
        started = time.monotonic()
        await eventually(lambda: at_least(lambda: jobs_counted("canceled"), canceled + 1), 5)
        assert time.monotonic() - started < 2.0
        await asyncio.wait_for(hung_up.wait(), 2)  # the worker hung up on the source

    row = await db_pool.fetchrow("SELECT * FROM media.tasks WHERE id = $1", task.task_id)
    assert row["status"] == "canceled"
    assert await open_uploads(s3, settings.s3_bucket, task.prefix) == []
    assert await stored_keys(s3, settings.s3_bucket, task.prefix) == []
    assert await ledger(db_pool, task.task_id) == [("charge", -TASK_COST), ("refund", TASK_COST)]


async def uploading(pool: asyncpg.Pool, s3: Any, worker: Worker, task: Submitted) -> bool:
    done = await pool.fetchval("SELECT bytes_done FROM media.tasks WHERE id = $1", task.task_id)
    return done > 0 and bool(await open_uploads(s3, worker.settings.s3_bucket, task.prefix))


# --- the cache ------------------------------------------------------------------------------


def counting_file(origin: Origin, media: bytes) -> tuple[str, list[int]]:
    downloads: list[int] = []

    async def handler(_: web.Request) -> web.StreamResponse:
        downloads.append(1)
        return web.Response(body=media, content_type="video/mp4")

    return origin.add(handler), downloads


async def test_a_source_stored_before_is_copied_not_downloaded(
    worker: Worker,
    submit: Submit,
    origin: Origin,
    db_pool: asyncpg.Pool,
    s3: Any,
    make_mp4: MakeMedia,
) -> None:
    media = make_mp4(300_000)
    url, downloads = counting_file(origin, media)
    first = await submit(url)
    assert (await finished(db_pool, first.task_id))["status"] == "succeeded"
    hits, misses = (counted("worker_cache_lookups_total", result=r) for r in ("hit", "miss"))

    # Another user, another spelling of the same URL (host case, default port, fragment).
    respelled = url.replace("http://127.0.0.1:", "HTTP://127.0.0.1:") + "#t=10"
    second = await submit(respelled)
    row = await finished(db_pool, second.task_id)
    assert row["status"] == "succeeded"
    assert downloads == [1]
    assert row["result_sha256"] == hashlib.sha256(media).hexdigest()
    assert counted("worker_cache_lookups_total", result="hit") == hits + 1
    assert counted("worker_cache_lookups_total", result="miss") == misses
    stored = await s3.get_object(Bucket=worker.settings.s3_bucket, Key=row["object_key"])
    assert await stored["Body"].read() == media
    assert stored["Metadata"] == {"sha256": row["result_sha256"]}

    # The cached object gone: the next task downloads again (and is cached anew).
    await remove_stored(s3, worker.settings.s3_bucket, first)
    third = await submit(url)
    assert (await finished(db_pool, third.task_id))["status"] == "succeeded"
    assert downloads == [1, 1]
    await remove_stored(s3, worker.settings.s3_bucket, second, third)


async def test_an_expired_cache_entry_and_a_cache_switched_off_download_again(
    infra: Any,
    worker: Worker,
    submit: Submit,
    origin: Origin,
    db_pool: asyncpg.Pool,
    channel: AbstractChannel,
    s3: Any,
    make_mp4: MakeMedia,
) -> None:
    url, downloads = counting_file(origin, make_mp4(100_000))
    done = [await submit(url)]
    await finished(db_pool, done[0].task_id)
    await db_pool.execute(
        "UPDATE media.source_cache SET stored_at = now() - make_interval(secs => $1)",
        worker.settings.cache_ttl_seconds + 1,
    )
    done.append(await submit(url))
    await finished(db_pool, done[1].task_id)
    assert downloads == [1, 1]

    settings = worker_settings(infra, cache_enabled=False)
    async with (
        own_namespace(infra, db_pool, Topology(settings.amqp_namespace)),
        running(settings, asyncio.Event()) as uncached,
    ):
        done.append(await create_task(db_pool, channel, uncached.topology, url))
        assert (await finished(db_pool, done[2].task_id))["status"] == "succeeded"
    assert downloads == [1, 1, 1]
    await remove_stored(s3, worker.settings.s3_bucket, *done)


# --- the state machine ----------------------------------------------------------------------


async def test_a_cancel_landing_before_success_is_recorded_refuses_the_success(
    worker: Worker,
    submit: Submit,
    origin: Origin,
    db_pool: asyncpg.Pool,
    s3: Any,
    make_mp4: MakeMedia,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = job_run.stream_to_s3
    canceled_ids: list[str] = []

    async def then_cancel(*args: Any, **kwargs: Any) -> Any:
        result = await real(*args, **kwargs)
        task_id = kwargs["key"].split("/")[2]
        async with db_pool.acquire() as con, con.transaction():
            assert await task_transitions.transition(con, worker.topology, task_id, tasks.CANCELED)
        canceled_ids.append(task_id)
        return result

    monkeypatch.setattr(job_run, "stream_to_s3", then_cancel)
    refused = counted("task_transitions_refused_total", to_status="succeeded")
    task = await submit(origin.file(make_mp4(100_000)))
    await eventually(lambda: at_least(lambda: float(len(canceled_ids)), 1))
    await eventually(
        lambda: at_least(
            lambda: counted("task_transitions_refused_total", to_status="succeeded"), refused + 1
        )
    )
    row = await finished(db_pool, task.task_id)
    assert row["status"] == "canceled"
    assert row["result_sha256"] is None
    assert [e["status"] for e in await events(db_pool, task.task_id)][-1] == "canceled"
    assert await ledger(db_pool, task.task_id) == [("charge", -TASK_COST), ("refund", TASK_COST)]
    await eventually(lambda: nothing_stored(s3, worker, task))


async def nothing_stored(s3: Any, worker: Worker, task: Submitted) -> bool:
    return await stored_keys(s3, worker.settings.s3_bucket, task.prefix) == []


async def test_two_deliveries_of_one_job_never_run_at_once(
    worker: Worker,
    submit: Submit,
    origin: Origin,
    db_pool: asyncpg.Pool,
    channel: AbstractChannel,
    s3: Any,
    make_mp4: MakeMedia,
) -> None:
    media = make_mp4(12 * MIB)
    deferred = jobs_counted("deferred")
    task = await submit(slow_source(origin, media))
    await eventually(lambda: uploading(db_pool, s3, worker, task))
    await publish(channel, worker.topology, task.job)  # a duplicate, while the first runs
    await eventually(lambda: at_least(lambda: jobs_counted("deferred"), deferred + 1))
    row = await finished(db_pool, task.task_id)
    assert (row["status"], row["attempt"]) == ("succeeded", 1)
    assert await stored_keys(s3, worker.settings.s3_bucket, task.prefix) == [f"{task.prefix}1"]
    await remove_stored(s3, worker.settings.s3_bucket, task)


async def test_a_failed_final_write_does_not_leave_the_task_running(
    worker: Worker,
    submit: Submit,
    origin: Origin,
    db_pool: asyncpg.Pool,
    s3: Any,
    make_mp4: MakeMedia,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = outcome._succeed
    refused_writes: list[int] = []

    async def database_down_once(*args: Any, **kwargs: Any) -> Any:
        if len(refused_writes) < 3:  # every try of the first job's final write
            refused_writes.append(1)
            raise asyncpg.exceptions.ConnectionDoesNotExistError("the database went away")
        return await real(*args, **kwargs)

    monkeypatch.setattr(outcome, "_succeed", database_down_once)
    task = await submit(origin.file(make_mp4(100_000)))
    row = await finished(db_pool, task.task_id)
    assert (row["status"], row["attempt"]) == ("succeeded", 2)
    assert len(refused_writes) == 3
    assert await stored_keys(s3, worker.settings.s3_bucket, task.prefix) == [f"{task.prefix}2"]
    assert await ledger(db_pool, task.task_id) == [("charge", -TASK_COST)]
    await remove_stored(s3, worker.settings.s3_bucket, task)


async def test_the_reaper_requeues_a_task_nobody_holds_and_fails_one_out_of_attempts(
    infra: Any,
    db_pool: asyncpg.Pool,
    channel: AbstractChannel,
    origin: Origin,
    s3: Any,
    make_mp4: MakeMedia,
) -> None:
    settings = worker_settings(infra, stale_task_seconds=0.5, reaper_interval_seconds=0.2)
    lost = await orphan(db_pool, origin.file(make_mp4(1000)), attempt=1)
    spent = await orphan(db_pool, origin.file(make_mp4(1000)), attempt=3)
    prefix = await left_in_storage(db_pool, s3, settings.s3_bucket, spent)
    async with (
        own_namespace(infra, db_pool, Topology(settings.amqp_namespace)),
        running(settings, asyncio.Event()),
    ):
        requeued = await finished(db_pool, lost)
        given_up = await finished(db_pool, spent)
    assert (requeued["status"], requeued["attempt"]) == ("succeeded", 2)
    assert (given_up["status"], given_up["error_code"]) == ("failed", "internal")
    assert await ledger(db_pool, spent) == [("charge", -TASK_COST), ("refund", TASK_COST)]
    await eventually(lambda: nothing_left(db_pool, s3, settings.s3_bucket, prefix, spent))
    await s3.delete_object(Bucket=settings.s3_bucket, Key=requeued["object_key"])


async def orphan(pool: asyncpg.Pool, url: str, attempt: int) -> str:
    """A task left running by a worker long gone, its job message lost."""
    user_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
    async with pool.acquire() as con, con.transaction():
        await credits.ensure_account(con, user_id, SIGNUP_CREDITS)
        await con.execute(
            """INSERT INTO media.tasks (id, user_id, source_url, cost, status, attempt,
                                        lease_owner, lease_expires_at)
               VALUES ($1, $2, $3, $4, 'running', $5, 'gone', now() - interval '1 minute')""",
            task_id,
            user_id,
            url,
            TASK_COST,
            attempt,
        )
        assert await credits.charge(con, user_id, task_id, TASK_COST)
    return task_id


async def left_in_storage(pool: asyncpg.Pool, s3: Any, bucket: str, task_id: str) -> str:
    """What workers killed mid-transfer leave of ``task_id``: an upload its journal records,
    one that was never recorded, and an object an attempt stored; returns their prefix."""
    user_id = str(await pool.fetchval("SELECT user_id FROM media.tasks WHERE id = $1", task_id))
    prefix = tasks.object_prefix(user_id, task_id)
    recorded = await s3.create_multipart_upload(Bucket=bucket, Key=f"{prefix}1")
    await s3.create_multipart_upload(Bucket=bucket, Key=f"{prefix}2")
    await s3.put_object(Bucket=bucket, Key=f"{prefix}3", Body=b"stored, never recorded")
    await pool.execute(
        """INSERT INTO media.task_uploads
               (task_id, object_key, upload_id, source_url, validator, size, content_type)
           VALUES ($1, $2, $3, 'http://127.0.0.1/x', '"etag"', 100, 'video/mp4')""",
        task_id,
        f"{prefix}1",
        recorded["UploadId"],
    )
    assert len(await open_uploads(s3, bucket, prefix)) == 2
    return prefix


# --- tracing --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def test_the_job_span_continues_the_trace_of_the_request_that_queued_it(
    spans: InMemorySpanExporter,
    worker: Worker,
    origin: Origin,
    db_pool: asyncpg.Pool,
    s3: Any,
    make_mp4: MakeMedia,
) -> None:
    url = origin.file(make_mp4(1000))
    gateway = trace.get_tracer("test.gateway")
    with gateway.start_as_current_span("POST /v1/tasks") as request_span:
        task = await create_queued(db_pool, worker.topology, url)
    row = await finished(db_pool, task.task_id)
    assert row["status"] == "succeeded"

    def job_span() -> ReadableSpan | None:
        return next(
            (
                s
                for s in spans.get_finished_spans()
                if s.attributes and s.attributes.get("mediaflow.task_id") == task.task_id
            ),
            None,
        )

    await eventually(lambda: at_least(lambda: float(job_span() is not None), 1))
    span = job_span()
    assert span is not None
    assert span.parent is not None
    assert span.kind == trace.SpanKind.CONSUMER
    assert span.context.trace_id == request_span.get_span_context().trace_id
    assert span.parent.span_id == request_span.get_span_context().span_id
    stage_names = {
        s.name
        for s in spans.get_finished_spans()
        if s.parent and s.parent.span_id == span.context.span_id
    }
    assert {"claim", "resolve", "transfer", "finalise"} <= stage_names
    await remove_stored(s3, worker.settings.s3_bucket, task)


async def create_queued(pool: asyncpg.Pool, topology: Topology, url: str) -> Submitted:
    """What the gateway does on POST /v1/tasks: the task and its job in one transaction, the
    job's headers carrying the current trace; the worker's outbox relay publishes it."""
    user_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
    job = Job(task_id=task_id, user_id=user_id, source_url=url)
    async with pool.acquire() as con, con.transaction():
        await credits.ensure_account(con, user_id, SIGNUP_CREDITS)
        row = await con.fetchrow(
            """INSERT INTO media.tasks (id, user_id, source_url, cost) VALUES ($1, $2, $3, $4)
               RETURNING *""",
            task_id,
            user_id,
            url,
            TASK_COST,
        )
        assert await credits.charge(con, user_id, task_id, TASK_COST)
        await task_transitions.record_event(con, topology, row)
        await outbox.enqueue(
            con,
            exchange=topology.jobs_exchange,
            routing_key=topology.job_routing_key(),
            body=job.SerializeToString(),
            mandatory=True,
            headers=inject_trace_context({"message_type": "mediaflow.v1.Job"}),
        )
    return Submitted(user_id, task_id, url, job)


async def test_a_job_that_keeps_being_interrupted_fails_instead_of_running_forever(
    worker: Worker, db_pool: asyncpg.Pool, channel: AbstractChannel, origin: Origin, s3: Any
) -> None:
    task_id = await orphan(db_pool, origin.file(b"x" * 100), worker.settings.retry_max_attempts)
    bucket = worker.settings.s3_bucket
    prefix = await left_in_storage(db_pool, s3, bucket, task_id)
    await db_pool.execute(
        "UPDATE media.tasks SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        task_id,
    )
    user_id = str(await db_pool.fetchval("SELECT user_id FROM media.tasks WHERE id = $1", task_id))
    await publish(channel, worker.topology, Job(task_id=task_id, user_id=user_id))
    row = await finished(db_pool, task_id)
    assert (row["status"], row["error_code"], row["attempt"]) == ("failed", "internal", 3)
    assert await ledger(db_pool, task_id) == [("charge", -TASK_COST), ("refund", TASK_COST)]
    # Nothing the dead workers left stays behind.
    await eventually(lambda: nothing_left(db_pool, s3, bucket, prefix, task_id))


async def test_attempts_that_stored_parts_do_not_use_up_the_retries(
    db_pool: asyncpg.Pool, origin: Origin
) -> None:
    """A large transfer whose workers keep dying goes on as long as each one stores a part;
    once attempts stop storing anything, RETRY_MAX_ATTEMPTS of them fail the task."""
    max_attempts, lease_seconds, part = 3, 30.0, 5 * 1024 * 1024
    task_id = await orphan(db_pool, origin.file(b"x" * 100), attempt=0)
    await db_pool.execute(
        """INSERT INTO media.task_uploads
               (task_id, object_key, upload_id, source_url, validator, size, content_type)
           VALUES ($1, 'k', 'u', 'http://127.0.0.1/x', '"etag"', $2, 'video/mp4')""",
        task_id,
        10 * part,
    )

    async def claim() -> lease.Claimed | lease.Held | lease.Exhausted | None:
        async with db_pool.acquire() as con, con.transaction():
            got = await lease.claim(con, task_id, max_attempts, lease_seconds)
            # The attempt "dies": its lease runs out at once.
            await con.execute(
                """UPDATE media.tasks SET attempt = attempt + 1,
                       lease_expires_at = now() - interval '1 second' WHERE id = $1""",
                task_id,
            )
        return got

    for number in range(1, 8):  # more attempts than the limit, each storing one part
        assert isinstance(await claim(), lease.Claimed)
        await db_pool.execute(
            """INSERT INTO media.task_upload_parts
                   (task_id, part_number, etag, checksum, first_byte, last_byte)
               VALUES ($1, $2, 'e', '{}', $3, $4)""",
            task_id,
            number,
            (number - 1) * part,
            number * part - 1,
        )
    # Then attempts that store nothing: max_attempts of them run, the next fails the task.
    stalled = [await claim() for _ in range(max_attempts + 1)]
    assert [type(got) for got in stalled] == [lease.Claimed] * max_attempts + [lease.Exhausted]


async def nothing_left(pool: asyncpg.Pool, s3: Any, bucket: str, prefix: str, task_id: str) -> bool:
    recorded = await pool.fetchval(
        "SELECT count(*) FROM media.task_uploads WHERE task_id = $1", task_id
    )
    uploads = await open_uploads(s3, bucket, prefix)
    return recorded == 0 and uploads == [] and await stored_keys(s3, bucket, prefix) == []


async def test_lease_heartbeats_leave_updated_at_alone(
    db_pool: asyncpg.Pool, origin: Origin
) -> None:
    """Clients see updated_at (and the ETag made from it) move with changes they can see,
    not with a worker's bookkeeping every second."""
    task_id = await orphan(db_pool, origin.file(b"x"), attempt=1)
    before = await db_pool.fetchval("SELECT updated_at FROM media.tasks WHERE id = $1", task_id)
    await db_pool.execute(
        """UPDATE media.tasks SET lease_owner = 'w/1', lease_expires_at = now() + interval '30 s'
           WHERE id = $1""",
        task_id,
    )
    assert (
        await db_pool.fetchval("SELECT updated_at FROM media.tasks WHERE id = $1", task_id)
        == before
    )
    await db_pool.execute("UPDATE media.tasks SET progress = 5 WHERE id = $1", task_id)
    assert (
        await db_pool.fetchval("SELECT updated_at FROM media.tasks WHERE id = $1", task_id) > before
    )
