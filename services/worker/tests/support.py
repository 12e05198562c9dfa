"""What the worker's integration tests share: a worker running in-process (``main.run``)
against the real PostgreSQL, RabbitMQ and SeaweedFS, jobs published the way the gateway's
relay does, and look-ups of what ended up where."""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
from aio_pika.abc import AbstractChannel, AbstractQueue
from aiohttp import web
from prometheus_client import REGISTRY

from devstack import stack
from mediaflow_libs import credits, task_transitions, tasks
from mediaflow_libs.amqp import Topology, delete_topology
from mediaflow_libs.contracts import Job, TaskEvent
from mediaflow_libs.s3 import open_s3
from mediaflow_worker.main import run
from mediaflow_worker.settings import WorkerSettings

Origin = Any  # conftest.Origin
MIB = 1024 * 1024
SIGNUP_CREDITS = 10
TASK_COST = 1


@dataclass(frozen=True)
class Worker:
    settings: WorkerSettings
    topology: Topology
    base_url: str
    running: asyncio.Task[None]


def amqp_url(infra: Any) -> str:
    # As for the services devstack starts, AMQP_URL in the environment names the broker.
    return os.environ.get("AMQP_URL", infra.amqp_url)


def worker_settings(infra: Any, **overrides: Any) -> WorkerSettings:
    # A namespace of its own: no other suite's jobs reach this consumer.
    return WorkerSettings(
        **infra.settings_kwargs(
            amqp_url=amqp_url(infra),
            amqp_namespace=f"{infra.amqp_namespace}-worker-{secrets.token_hex(3)}",
            port=stack.free_port(),
            progress_interval_seconds=0.1,
            # Short waits everywhere, so retries and take-overs happen within a test.
            retry_max_attempts=3,
            retry_base_delay_seconds=0.2,
            lease_seconds=2,
            lease_heartbeat_seconds=0.25,
            fetch_read_timeout_seconds=1,
            max_media_bytes=64 * MIB,
        )
        | overrides
    )


@asynccontextmanager
async def running(settings: WorkerSettings, stop: asyncio.Event) -> AsyncIterator[Worker]:
    """``main.run`` in this process until the block ends or ``stop`` is set."""
    task = asyncio.create_task(run(settings, stop))
    base_url = f"http://127.0.0.1:{settings.port}"

    async def ready() -> bool:
        if task.done():
            task.result()
        try:
            async with httpx.AsyncClient(base_url=base_url) as client:
                return (await client.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    await eventually(ready, within=30)
    try:
        yield Worker(settings, Topology(settings.amqp_namespace), base_url, task)
    finally:
        stop.set()
        await task


@asynccontextmanager
async def own_namespace(infra: Any, pool: asyncpg.Pool, topology: Topology) -> AsyncIterator[None]:
    """Removes the namespace's queues and exchanges, and outbox rows nobody can deliver now."""
    try:
        yield
    finally:
        # Retries wait in the outbox for the delay exchange too: every exchange of the namespace.
        await pool.execute(
            "DELETE FROM media.outbox WHERE exchange = ANY($1::text[])", topology.exchanges
        )
        await delete_topology(amqp_url(infra), topology)


@pytest.fixture(scope="module")
async def worker(infra: Any, db_pool: asyncpg.Pool) -> AsyncIterator[Worker]:
    settings = worker_settings(infra)
    async with (
        own_namespace(infra, db_pool, Topology(settings.amqp_namespace)),
        running(settings, asyncio.Event()) as started,
    ):
        yield started


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 60) -> None:
    for _ in range(int(within / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true within {within}s: {check}")


@pytest.fixture(scope="module")
async def channel(infra: Any) -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect(amqp_url(infra))
    async with connection:
        yield await connection.channel()


@pytest.fixture(scope="module")
async def s3(worker: Worker) -> AsyncIterator[Any]:
    async with open_s3(worker.settings) as client:
        yield client


@dataclass(frozen=True)
class Submitted:
    user_id: str
    task_id: str
    url: str
    job: Job

    @property
    def prefix(self) -> str:
        """Where the task's attempts store their objects (``<prefix><attempt>``)."""
        return f"tasks/{self.user_id}/{self.task_id}/"


Submit = Callable[..., Awaitable[Submitted]]


async def create_task(
    pool: asyncpg.Pool,
    channel: AbstractChannel,
    topology: Topology,
    url: str,
    user_id: str | None = None,
    options: dict[str, str] | None = None,
) -> Submitted:
    """What the gateway does on POST /v1/tasks, then the job as its relay would publish it."""
    user_id, task_id = user_id or str(uuid.uuid4()), str(uuid.uuid4())
    async with pool.acquire() as con, con.transaction():
        await credits.ensure_account(con, user_id, SIGNUP_CREDITS)
        row = await con.fetchrow(
            """INSERT INTO media.tasks (id, user_id, source_url, cost, options)
               VALUES ($1, $2, $3, $4, $5) RETURNING *""",
            task_id,
            user_id,
            url,
            TASK_COST,
            tasks.stored_options(options),
        )
        assert await credits.charge(con, user_id, task_id, TASK_COST)
        await task_transitions.record_event(con, topology, row)
    job = Job(task_id=task_id, user_id=user_id, source_url=url, **tasks.job_options(options))
    await publish(channel, topology, job)
    return Submitted(user_id, task_id, url, job)


@pytest.fixture
def submit(worker: Worker, db_pool: asyncpg.Pool, channel: AbstractChannel) -> Submit:
    async def create(
        url: str, user_id: str | None = None, options: dict[str, str] | None = None
    ) -> Submitted:
        return await create_task(db_pool, channel, worker.topology, url, user_id, options)

    return create


async def publish(channel: AbstractChannel, topology: Topology, job: Job) -> None:
    exchange = await channel.get_exchange(topology.jobs_exchange)
    await exchange.publish(
        aio_pika.Message(job.SerializeToString(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
        routing_key=topology.job_routing_key(),
    )


async def finished(pool: asyncpg.Pool, task_id: str) -> asyncpg.Record:
    async def ended() -> bool:
        status = await pool.fetchval("SELECT status FROM media.tasks WHERE id = $1", task_id)
        return status in tasks.TERMINAL_STATUSES

    await eventually(ended)
    row = await pool.fetchrow("SELECT * FROM media.tasks WHERE id = $1", task_id)
    assert row is not None
    return row


async def events(pool: asyncpg.Pool, task_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT status, task FROM media.task_events WHERE task_id = $1 ORDER BY id", task_id
    )


async def ledger(pool: asyncpg.Pool, task_id: str) -> list[tuple[str, int]]:
    rows = await pool.fetch(
        "SELECT reason, delta FROM media.credit_ledger WHERE task_id = $1 ORDER BY id", task_id
    )
    return [(r["reason"], r["delta"]) for r in rows]


def counted(name: str, **labels: str) -> float:
    """A sample of the worker's metrics in this process (0 before its first observation)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def jobs_counted(outcome: str) -> float:
    return counted("worker_jobs_total", outcome=outcome)


async def open_uploads(s3: Any, bucket: str, prefix: str) -> list[str]:
    listing = await s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return [upload["UploadId"] for upload in listing.get("Uploads", [])]


async def stored_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    listing = await s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


async def remove_stored(s3: Any, bucket: str, *done: Submitted) -> None:
    for task in done:
        for key in await stored_keys(s3, bucket, task.prefix):
            await s3.delete_object(Bucket=bucket, Key=key)


async def collect_until(queue: AbstractQueue, status: str) -> list[TaskEvent]:
    received: list[TaskEvent] = []
    async with asyncio.timeout(30), queue.iterator() as messages:
        async for message in messages:
            await message.ack()
            received.append(TaskEvent.FromString(message.body))
            if received[-1].task.status == status:
                return received
    raise AssertionError("the event stream ended")


def progress_unknown_without_size(history: list[asyncpg.Record]) -> bool:
    """API.md: ``progress`` is null whenever ``bytes_total`` is."""
    return all(e["task"]["progress"] is None for e in history if e["task"]["bytes_total"] is None)


async def at_least(value: Callable[[], float], expected: float) -> bool:
    return value() >= expected


def slow_source(origin: Origin, media: bytes) -> str:
    """A source that takes a few seconds to send ``media``: time to act mid-transfer."""

    async def slowly(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(media))})
        await response.prepare(request)
        try:
            for start in range(0, len(media), 256 * 1024):
                await response.write(media[start : start + 256 * 1024])
                await asyncio.sleep(0.02)
        except ConnectionResetError:
            pass  # the worker hung up, as the test wanted
        return response

    return origin.add(slowly)


async def parts_uploading(
    pool: asyncpg.Pool, s3: Any, settings: WorkerSettings, task: Submitted
) -> bool:
    """True once the task has passed its first part and a multipart upload is open."""
    done = await pool.fetchval("SELECT bytes_done FROM media.tasks WHERE id = $1", task.task_id)
    return done > 6 * MIB and bool(await open_uploads(s3, settings.s3_bucket, task.prefix))
