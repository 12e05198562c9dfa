"""The worker process: consume jobs, serve health and metrics, relay the outbox, reap
stale tasks, sweep expired and deleted stored files.

``main()`` opens the resources in order (database, broker, storage, HTTP client), serves
``/healthz``, ``/readyz`` and ``/metrics``, and consumes the jobs queue. On SIGTERM or
SIGINT it stops consuming, lets in-flight jobs finish (up to SHUTDOWN_GRACE_SECONDS; the
rest give their task back and go back to the queue, their uploads aborted), then closes
everything in reverse order.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from contextlib import AsyncExitStack

import structlog
from pydantic import ValidationError

from mediaflow_libs.amqp import Topology, declare_topology, open_connection
from mediaflow_libs.app_builder import operator_app
from mediaflow_libs.db import open_pool
from mediaflow_libs.logging import configure_logging
from mediaflow_libs.operator_routes import ReadinessCheck
from mediaflow_libs.outbox import OutboxRelay
from mediaflow_libs.s3 import ensure_bucket, open_s3
from mediaflow_libs.serving import freeze_startup_heap, serve_in_loop
from mediaflow_libs.telemetry import configure_tracing
from mediaflow_worker import memory
from mediaflow_worker.consumer import JobConsumer
from mediaflow_worker.fetch import open_http
from mediaflow_worker.media.mux import media_tools
from mediaflow_worker.reaper import reap_stale_tasks
from mediaflow_worker.resolve import Resolvers
from mediaflow_worker.resources import Resources
from mediaflow_worker.retention import BATCH as SWEEP_BATCH
from mediaflow_worker.retention import sweep_stored_files
from mediaflow_worker.settings import WorkerSettings
from mediaflow_worker.sweep import sweep_orphan_uploads

log = structlog.get_logger(__name__)


def main() -> None:
    memory.tune_allocator()  # first: before any thread or large allocation exists
    try:
        settings = WorkerSettings()
    except ValidationError as exc:
        sys.stderr.write(f"mediaflow-worker: invalid configuration\n{exc}\n")
        sys.exit(2)
    configure_logging("worker", settings.log_level, settings.log_format)
    configure_tracing("worker")
    asyncio.run(_serve_until_signalled(settings))


if __name__ == "__main__":
    main()


async def _serve_until_signalled(settings: WorkerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run(settings, stop)


async def run(
    settings: WorkerSettings, stop: asyncio.Event, resolvers: Resolvers | None = None
) -> None:
    """Run the worker until ``stop`` is set (by a signal, or by a test); ``resolvers``
    replaces the default page resolvers (to add site-specific ones)."""
    topology = Topology(settings.amqp_namespace)
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(
            open_pool(settings.database_url, settings.database_pool_size)
        )
        amqp = await stack.enter_async_context(
            open_connection(settings.amqp_url, "mediaflow-worker")
        )
        channel = await amqp.channel()
        stack.push_async_callback(channel.close)
        await declare_topology(channel, topology)
        await channel.set_qos(prefetch_count=settings.worker_prefetch)
        s3 = await stack.enter_async_context(open_s3(settings))
        await ensure_bucket(s3, settings.s3_bucket)
        http = await stack.enter_async_context(open_http(settings.egress))
        publisher = await amqp.channel(publisher_confirms=True, on_return_raises=True)
        stack.push_async_callback(publisher.close)
        resources = Resources(
            settings, topology, pool, amqp, s3, http, publisher, resolvers or Resolvers()
        )

        # It publishes the task events our transitions write (and anyone else's rows).
        relay = asyncio.create_task(OutboxRelay(pool, amqp).run(), name="outbox-relay")
        stack.push_async_callback(_cancel, relay)
        reaper = asyncio.create_task(_reap_forever(resources), name="reaper")
        stack.push_async_callback(_cancel, reaper)

        app = operator_app(readiness_checks(resources), settings, {"media_tools": media_tools()})
        await stack.enter_async_context(serve_in_loop(app, settings.host, settings.port))
        # What starting up allocated and dropped goes back to the system before jobs come,
        # and what it keeps (botocore's models above all) stops being walked by collections.
        memory.release_free_memory()
        freeze_startup_heap()

        consumer = JobConsumer(resources, channel)
        await consumer.start()
        log.info("worker.started", port=settings.port, prefetch=settings.worker_prefetch)
        await stop.wait()
        log.info("worker.stopping")
        await consumer.stop(settings.shutdown_grace_seconds)
    log.info("worker.stopped")


def readiness_checks(resources: Resources) -> list[ReadinessCheck]:
    async def database() -> None:
        async with resources.pool.acquire(timeout=2) as con:
            await con.fetchval("SELECT 1")

    async def broker() -> None:
        if resources.amqp.is_closed:
            raise ConnectionError("the RabbitMQ connection is closed")

    async def storage() -> None:
        await resources.s3.head_bucket(Bucket=resources.settings.s3_bucket)

    return [database, broker, storage]


async def _reap_forever(resources: Resources) -> None:
    settings = resources.settings
    interval = settings.reaper_interval_seconds
    # The first pass comes at a random point of the first interval: replicas that start
    # together spread out, and a worker that lives shorter than the interval (a crash loop,
    # a quick scale-down) still takes its turn instead of never reaping at all.
    delay = random.uniform(0, interval)
    while True:
        await asyncio.sleep(delay)
        delay = interval
        try:
            await reap_stale_tasks(resources)
        except Exception as exc:
            log.warning("worker.reaper_failed", error=repr(exc))
        try:
            # A full batch may mean more are due.
            while (
                await sweep_stored_files(resources.pool, resources.s3, settings.s3_bucket)
                == SWEEP_BATCH
            ):
                pass
        except Exception as exc:
            log.warning("worker.sweep_failed", error=repr(exc))
        try:
            await sweep_orphan_uploads(
                resources.pool, resources.s3, settings.s3_bucket, settings.orphan_upload_seconds
            )
        except Exception as exc:
            log.warning("worker.upload_sweep_failed", error=repr(exc))


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
