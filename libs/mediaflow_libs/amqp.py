"""RabbitMQ: the connection lifespan and the one declaration of the topology."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

log = structlog.get_logger(__name__)

JOB_DELIVERY_LIMIT = 5
# Each delay is one queue whose messages expire into the jobs exchange: a waiting retry
# sits in the broker, not in a worker. Fixed per-queue TTLs, because a queue expires
# messages only at its head (a per-message TTL would wait behind a longer one).
RETRY_DELAYS_MS = (
    250,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    1_800_000,
    3_600_000,
)


@dataclass(frozen=True)
class Topology:
    """Exchange and queue names, all derived from one namespace (default ``media``)."""

    namespace: str = "media"

    @property
    def jobs_exchange(self) -> str:
        return f"{self.namespace}.jobs"

    @property
    def jobs_queue(self) -> str:
        return f"{self.namespace}.jobs"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.jobs.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.namespace}.jobs.dlq"

    @property
    def delay_exchange(self) -> str:
        return f"{self.namespace}.jobs.delay"

    def delay_queue(self, delay_ms: int) -> str:
        return f"{self.namespace}.jobs.delay.{delay_ms}ms"

    @staticmethod
    def delay_routing_key(delay_ms: int) -> str:
        return f"delay.{delay_ms}"

    @property
    def queues(self) -> list[str]:
        """Every durable queue of the namespace (what a test or bench deletes after itself)."""
        delays = [self.delay_queue(ms) for ms in RETRY_DELAYS_MS]
        return [self.jobs_queue, self.dead_letter_queue, *delays]

    @property
    def exchanges(self) -> list[str]:
        return [
            self.jobs_exchange,
            self.dead_letter_exchange,
            self.delay_exchange,
            self.events_exchange,
            self.revocations_exchange,
        ]

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def revocations_exchange(self) -> str:
        return f"{self.namespace}.revocations"

    @staticmethod
    def job_routing_key() -> str:
        return "job"

    @staticmethod
    def event_routing_key(user_id: str, task_id: str) -> str:
        return f"user.{user_id}.task.{task_id}"

    @staticmethod
    def user_binding_key(user_id: str) -> str:
        return f"user.{user_id}.#"


async def declare_topology(channel: AbstractChannel, topology: Topology) -> None:
    """Declare every exchange and durable queue; idempotent, run by each service at start."""
    dlx = await channel.declare_exchange(
        topology.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    dlq = await channel.declare_queue(
        topology.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dlq.bind(dlx)
    jobs = await channel.declare_exchange(
        topology.jobs_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    queue = await channel.declare_queue(
        topology.jobs_queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": JOB_DELIVERY_LIMIT,
            "x-dead-letter-exchange": topology.dead_letter_exchange,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )
    await queue.bind(jobs, routing_key=topology.job_routing_key())
    delays = await channel.declare_exchange(
        topology.delay_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    for delay_ms in RETRY_DELAYS_MS:
        waiting = await channel.declare_queue(
            topology.delay_queue(delay_ms),
            durable=True,
            # Classic queues: a TTL and a dead-letter target are all they need, and thirteen
            # Raft groups per namespace would cost the broker far more. A message lost in a
            # broker crash mid-expiry is found again by the worker's stale-task reaper.
            arguments={
                "x-queue-type": "classic",
                "x-message-ttl": delay_ms,
                "x-dead-letter-exchange": topology.jobs_exchange,
                "x-dead-letter-routing-key": topology.job_routing_key(),
            },
        )
        await waiting.bind(delays, routing_key=topology.delay_routing_key(delay_ms))
    await channel.declare_exchange(
        topology.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    await channel.declare_exchange(
        topology.revocations_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )


@asynccontextmanager
async def open_connection(url: str, name: str) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(url, client_properties={"connection_name": name})
    log.info("amqp.connected", connection_name=name)
    try:
        yield connection
    finally:
        await connection.close()
        log.info("amqp.closed")


async def delete_topology(amqp_url: str, topology: Topology) -> None:
    """Delete every queue and exchange of a namespace: what a test session or a benchmark
    does after itself, so the shared broker does not fill with abandoned quorum queues."""
    async with asyncio.timeout(30):
        connection = await aio_pika.connect(amqp_url, timeout=5)
        async with connection:
            # A channel closes on a failed operation, so each deletion gets its own.
            for queue in topology.queues:
                with contextlib.suppress(aio_pika.exceptions.AMQPError):
                    channel = await connection.channel()
                    await channel.queue_delete(queue)
            for exchange in topology.exchanges:
                with contextlib.suppress(aio_pika.exceptions.AMQPError):
                    channel = await connection.channel()
                    await channel.exchange_delete(exchange)
