"""A delivery from the broker to its settlement: decode it, run the job, then ack, nack or
postpone it.

The delivery is acked only after the job's outcome is committed; deliveries come at least
once, so a job for a task that already ended is acked and changes nothing. When the outcome
cannot be recorded the job is postponed through a delay queue.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable

import structlog
from aio_pika.abc import AbstractIncomingMessage
from google.protobuf.message import DecodeError
from opentelemetry import trace

from mediaflow_libs.contracts import Job
from mediaflow_libs.telemetry import current_trace_id, extract_trace_context, trace_headers
from mediaflow_worker.backoff import delay_queue_ms
from mediaflow_worker.delay import publish_delayed
from mediaflow_worker.job_run import Outcome, process_job
from mediaflow_worker.metrics import JOB_SECONDS, JOBS, JOBS_IN_FLIGHT
from mediaflow_worker.resources import Delivery, Resources

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("mediaflow.worker")


async def handle_delivery(message: AbstractIncomingMessage, resources: Resources) -> None:
    """Process one delivery and settle it with the broker."""
    try:
        job = Job.FromString(message.body)
        uuid.UUID(job.task_id)
        uuid.UUID(job.user_id)
    except (DecodeError, ValueError):
        # Retrying cannot fix a malformed message; the dead-letter queue keeps it for a human.
        log.error("job.malformed", message_id=message.message_id, body_bytes=len(message.body))
        JOBS.labels("rejected").inc()
        await _settle(message.reject(requeue=False))
        return
    delivery = Delivery(job, message.body, trace_headers(message.headers))
    started = time.perf_counter()
    with (
        tracer.start_as_current_span(
            f"{resources.topology.jobs_queue} process",
            context=extract_trace_context(message.headers),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "process",
                "messaging.destination.name": resources.topology.jobs_queue,
                "mediaflow.task_id": job.task_id,
            },
        ) as span,
        structlog.contextvars.bound_contextvars(
            task_id=job.task_id, user_id=job.user_id, trace_id=current_trace_id()
        ),
    ):
        JOBS_IN_FLIGHT.inc()
        outcome: Outcome
        try:
            outcome = await process_job(delivery, resources)
        except asyncio.CancelledError:
            # Shutdown: the lease is given back, the job goes to another worker.
            JOBS.labels("requeued").inc()
            await asyncio.shield(_settle(message.nack(requeue=True)))
            raise
        except Exception:
            log.exception("job.not_recorded")
            outcome = "requeued"
            if not await _postpone(delivery, resources):
                JOBS.labels(outcome).inc()
                await _settle(message.nack(requeue=True))
                return
        finally:
            JOBS_IN_FLIGHT.dec()
        span.set_attribute("mediaflow.outcome", outcome)
        JOBS.labels(outcome).inc()
        JOB_SECONDS.labels(outcome).observe(time.perf_counter() - started)
        await _settle(message.ack())


async def _settle(settling: Awaitable[object]) -> None:
    try:
        await settling
    except Exception as exc:
        # The channel is gone, and with it the delivery: the broker hands it out again and
        # the next attempt finds the task ended, or held and waits.
        log.warning("job.settle_failed", error=repr(exc))


async def _postpone(delivery: Delivery, resources: Resources) -> bool:
    """Put the job in a delay queue straight away (the database is what failed, so not
    through the outbox): a requeue would come back at once and use up the jobs queue's
    delivery limit while the database is still down."""
    delay_ms = delay_queue_ms(resources.settings.lease_seconds, 0, resources.rng)
    try:
        await publish_delayed(delivery, resources, delay_ms)
    except Exception as exc:
        log.warning("job.postpone_failed", error=repr(exc))
        return False
    log.info("job.postponed", delay_ms=delay_ms)
    return True
