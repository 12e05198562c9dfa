"""Revocations announced by auth to every gateway and notifier replica, so that no session
cache goes on accepting a revoked credential."""

from __future__ import annotations

from collections.abc import Callable

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractRobustConnection

from mediaflow_libs.amqp import Topology
from mediaflow_libs.contracts import CredentialRevoked
from mediaflow_libs.session_client import SessionClient


async def listen_for_revocations(
    connection: AbstractRobustConnection,
    topology: Topology,
    client: SessionClient,
    also: Callable[[CredentialRevoked], None] | None = None,
) -> None:
    """Evict revoked credentials from ``client``'s cache as auth announces them (and pass
    each announcement to ``also``). Runs until cancelled; after a reconnect the whole cache
    is dropped, since announcements may have been missed meanwhile."""
    connection.reconnect_callbacks.add(lambda *_: client.forget_all())
    channel = await connection.channel()
    exchange = await channel.declare_exchange(
        topology.revocations_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange)
    async with queue.iterator() as messages:
        async for message in messages:
            async with message.process():
                revoked = CredentialRevoked.FromString(message.body)
                client.forget(revoked)
                if also is not None:
                    also(revoked)


async def announce_revocation(
    connection: AbstractConnection, topology: Topology, revoked: CredentialRevoked
) -> None:
    """Tell every gateway and notifier replica to drop a credential from its cache."""
    channel = await connection.channel()
    try:
        exchange = await channel.get_exchange(topology.revocations_exchange, ensure=False)
        await exchange.publish(aio_pika.Message(revoked.SerializeToString()), routing_key="")
    finally:
        await channel.close()
