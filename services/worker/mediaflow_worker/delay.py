"""Sending a job back through a delay queue, straight to the broker."""

from __future__ import annotations

import aio_pika

from mediaflow_worker.resources import Delivery, Resources


async def publish_delayed(delivery: Delivery, resources: Resources, delay_ms: int) -> None:
    """Publish the job to the delay queue that gives it back after about ``delay_ms``."""
    topology = resources.topology
    exchange = await resources.publisher.get_exchange(topology.delay_exchange, ensure=False)
    await exchange.publish(
        aio_pika.Message(
            delivery.body,
            headers=delivery.message_headers(),
            content_type="application/x-protobuf",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=topology.delay_routing_key(delay_ms),
        mandatory=True,
    )
