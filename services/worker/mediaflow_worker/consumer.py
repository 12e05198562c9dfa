"""Deliveries from the jobs queue to settlement, each job in a task of its own."""

from __future__ import annotations

import asyncio

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from mediaflow_worker.resources import Resources
from mediaflow_worker.settlement import handle_delivery

log = structlog.get_logger(__name__)


class JobConsumer:
    """Hands deliveries to settlement, each in a task of its own, and drains them on stop.

    The jobs run outside aio-pika's delivery tasks so that a broker reconnect does not
    cancel a half-done transfer; the semaphore keeps the prefetch bound even when a
    reconnected channel delivers again while old jobs still run.
    """

    def __init__(self, resources: Resources, channel: AbstractChannel) -> None:
        self._resources = resources
        self._channel = channel
        self._slots = asyncio.Semaphore(resources.settings.worker_prefetch)
        self._jobs: set[asyncio.Task[None]] = set()
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._stopping = False

    async def start(self) -> None:
        self._queue = await self._channel.get_queue(self._resources.topology.jobs_queue)
        self._tag = await self._queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            # Delivered just before the cancel took effect: hand it back to another worker now
            # rather than when our channel closes.
            await message.nack(requeue=True)
            return
        job = asyncio.create_task(self._run(message))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _run(self, message: AbstractIncomingMessage) -> None:
        async with self._slots:
            await handle_delivery(message, self._resources)

    async def stop(self, grace_seconds: float) -> None:
        self._stopping = True
        if self._queue is not None and self._tag is not None:
            await self._queue.cancel(self._tag)
        if not self._jobs:
            return
        log.info("worker.draining", jobs=len(self._jobs), grace_seconds=grace_seconds)
        _, unfinished = await asyncio.wait(set(self._jobs), timeout=grace_seconds)
        for job in unfinished:
            job.cancel()  # the upload is aborted; the unacked delivery goes back to the queue
        if unfinished:
            log.warning("worker.jobs_cancelled", jobs=len(unfinished))
            await asyncio.wait(unfinished)
