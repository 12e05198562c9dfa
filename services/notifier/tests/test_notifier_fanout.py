"""The fan-out against the real RabbitMQ: bindings follow the open streams, a slow stream has
its progress updates coalesced and is dropped without holding up anyone else when it falls
behind even so, and a lost channel ends streams and recovers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractExchange, AbstractRobustConnection
from aio_pika.exceptions import DeliveryError
from prometheus_client import REGISTRY

from mediaflow_libs import amqp
from mediaflow_libs.contracts import Task, TaskEvent
from mediaflow_notifier.fanout import Fanout, Subscriber
from services.notifier.tests.support import WAIT_SECONDS, Notifier, User, sign_up, wait_for


class Publisher:
    """Publishes task events with ``mandatory`` set, so it learns whether any queue is bound."""

    def __init__(self, exchange: AbstractExchange, topology: amqp.Topology) -> None:
        self._exchange = exchange
        self._topology = topology
        self._next_id = 0

    async def publish(self, user_id: str, task_id: str | None = None) -> tuple[int, bool]:
        """Returns the event id and whether the broker routed it to a queue."""
        self._next_id += 1
        task_id = task_id or str(uuid.uuid4())
        body = TaskEvent(
            event_id=self._next_id, task=Task(id=task_id, user_id=user_id, status="running")
        ).SerializeToString()
        try:
            await self._exchange.publish(
                aio_pika.Message(body),
                routing_key=self._topology.event_routing_key(user_id, task_id),
                mandatory=True,
            )
        except DeliveryError:
            return self._next_id, False
        return self._next_id, True

    async def publish_raw(self, user_id: str, body: bytes) -> None:
        await self._exchange.publish(
            aio_pika.Message(body), routing_key=self._topology.event_routing_key(user_id, "x")
        )

    async def routed(self, user_id: str) -> bool:
        """Whether an event for ``user_id`` reaches any queue now."""
        return (await self.publish(user_id))[1]


@pytest.fixture
async def connection(infra: Any) -> AsyncIterator[AbstractRobustConnection]:
    async with amqp.open_connection(infra.amqp_url, f"fanout-test-{uuid.uuid4().hex[:8]}") as conn:
        yield conn


@pytest.fixture
async def topology_and_publisher(
    infra: Any, amqp_connection: AbstractRobustConnection
) -> AsyncIterator[tuple[amqp.Topology, Publisher]]:
    # An exchange of its own: "unroutable" must mean that no queue at all is bound.
    topology = amqp.Topology(f"{infra.amqp_namespace}-fanout-{uuid.uuid4().hex[:8]}")
    channel = await amqp_connection.channel(publisher_confirms=True, on_return_raises=True)
    exchange = await channel.declare_exchange(
        topology.events_exchange, aio_pika.ExchangeType.TOPIC, durable=False
    )
    try:
        yield topology, Publisher(exchange, topology)
    finally:
        await exchange.delete()
        await channel.close()


@contextlib.asynccontextmanager
async def running(
    connection: AbstractRobustConnection, topology: amqp.Topology, buffer_size: int = 16
) -> AsyncIterator[Fanout]:
    fanout = Fanout(connection, topology, buffer_size=buffer_size, reopen_delay=0.1)
    consumer = asyncio.create_task(fanout.run())
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            await fanout.wait_ready()
        yield fanout
    finally:
        fanout.shutdown()
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer


async def received(subscriber: Subscriber, count: int) -> list[int]:
    """The ids of the next ``count`` events the subscriber is given."""
    changed = asyncio.Event()
    subscriber.on_change = changed.set
    ids: list[int] = []
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                ids += [event.event_id for event in subscriber.take()]
                if len(ids) >= count:
                    return ids
                await changed.wait()
                changed.clear()
    finally:
        subscriber.on_change = None


async def test_binding_follows_the_users_streams(
    connection: AbstractRobustConnection, topology_and_publisher: tuple[amqp.Topology, Publisher]
) -> None:
    topology, publisher = topology_and_publisher
    user = str(uuid.uuid4())
    async with running(connection, topology) as fanout:
        assert not (await publisher.publish(user))[1]

        first = await fanout.subscribe(user, None)
        # Bound by the time subscribe returns: nothing published from here on is missed.
        event_id, routed = await publisher.publish(user)
        assert routed
        assert await received(first, 1) == [event_id]

        second = await fanout.subscribe(user, None)
        fanout.unsubscribe(first)
        await fanout.settled()  # a wrong unbind would have reached the broker by now
        event_id, routed = await publisher.publish(user)
        assert routed
        assert await received(second, 1) == [event_id]

        fanout.unsubscribe(second)
        await fanout.settled()
        assert not await publisher.routed(user)

        third = await fanout.subscribe(user, None)
        event_id, routed = await publisher.publish(user)
        assert routed
        assert await received(third, 1) == [event_id]


async def test_events_go_only_to_their_users_matching_streams(
    connection: AbstractRobustConnection, topology_and_publisher: tuple[amqp.Topology, Publisher]
) -> None:
    topology, publisher = topology_and_publisher
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    watched = str(uuid.uuid4())
    async with running(connection, topology) as fanout:
        everything = await fanout.subscribe(alice, None)
        narrowed = await fanout.subscribe(alice, frozenset({watched}))
        bobs = await fanout.subscribe(bob, None)
        other_task, _ = await publisher.publish(alice)
        watched_task, _ = await publisher.publish(alice, watched)
        bobs_task, _ = await publisher.publish(bob)

        assert await received(everything, 2) == [other_task, watched_task]
        assert await received(narrowed, 1) == [watched_task]
        assert await received(bobs, 1) == [bobs_task]


async def test_a_slow_stream_is_dropped_without_holding_up_others(
    connection: AbstractRobustConnection, topology_and_publisher: tuple[amqp.Topology, Publisher]
) -> None:
    topology, publisher = topology_and_publisher
    slow_user, brisk_user = str(uuid.uuid4()), str(uuid.uuid4())
    async with running(connection, topology, buffer_size=3) as fanout:
        slow = await fanout.subscribe(slow_user, None)
        brisk = await fanout.subscribe(brisk_user, None)
        for _ in range(4):  # one more than the buffer holds; nobody reads them
            await publisher.publish(slow_user)
        await publisher.publish_raw(brisk_user, b"not a protobuf TaskEvent \xff")
        brisk_event, _ = await publisher.publish(brisk_user)

        assert await received(brisk, 1) == [brisk_event]
        await wait_for(lambda: slow.closed_reason == "slow_client", "the slow stream to drop")
        assert fanout.subscriber_count() == 1
        # It was the user's only stream, so its binding goes too.
        await fanout.settled()
        assert not await publisher.routed(slow_user)


async def test_a_lost_channel_ends_streams_and_a_fresh_queue_takes_over(
    connection: AbstractRobustConnection, topology_and_publisher: tuple[amqp.Topology, Publisher]
) -> None:
    topology, publisher = topology_and_publisher
    user = str(uuid.uuid4())
    async with running(connection, topology) as fanout:
        before = await fanout.subscribe(user, None)

        # The broker drops the connection (as on a restart); aio-pika reconnects it.
        transport = connection.transport
        assert transport is not None
        await transport.connection.close(ConnectionError("simulated broker restart"))

        await wait_for(lambda: before.closed_reason == "broker_lost", "the stream to end")
        await wait_for(lambda: fanout.ready, "a fresh queue")
        assert fanout.subscriber_count() == 0

        after = await fanout.subscribe(user, None)
        assert after.closed_reason is None
        event_id, routed = await publisher.publish(user)
        assert routed
        assert await received(after, 1) == [event_id]


async def test_no_new_streams_once_shutting_down(
    connection: AbstractRobustConnection, topology_and_publisher: tuple[amqp.Topology, Publisher]
) -> None:
    topology, _ = topology_and_publisher
    async with running(connection, topology) as fanout:
        open_one = await fanout.subscribe(str(uuid.uuid4()), None)
        fanout.shutdown()
        late = await fanout.subscribe(str(uuid.uuid4()), None)

        assert open_one.closed_reason == "shutdown"
        assert late.closed_reason == "shutdown"
        assert not fanout.ready
        assert fanout.subscriber_count() == 0


def _event(event_id: int, status: str, task: str = "t", attempt: int = 1) -> TaskEvent:
    return TaskEvent(
        event_id=event_id, task=Task(id=task, user_id="user", status=status, attempt=attempt)
    )


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_subscriber_buffer_is_bounded() -> None:
    subscriber = Subscriber("user", frozenset({"wanted"}), capacity=2)
    dropped = _sample("notifier_dropped_updates_total")

    assert subscriber.wants(_event(1, "queued", "wanted"))
    assert not subscriber.wants(_event(1, "queued", "other"))
    assert subscriber.offer(_event(1, "queued", "wanted"))
    assert subscriber.offer(_event(2, "queued", "wanted-too"))
    assert not subscriber.offer(_event(3, "queued", "wanted"))
    assert subscriber.closed_reason == "slow_client"
    assert subscriber.take() == []  # what waited is let go at once
    assert _sample("notifier_dropped_updates_total") == dropped + 3
    subscriber.close("shutdown")  # the first reason stays
    assert subscriber.closed_reason == "slow_client"


def test_waiting_progress_updates_are_coalesced_and_status_changes_kept() -> None:
    subscriber = Subscriber("user", None, capacity=4)
    coalesced = _sample("notifier_coalesced_updates_total")

    for event in (
        _event(1, "queued"),
        _event(2, "running"),
        _event(3, "running"),
        _event(4, "running"),  # progress of attempt 1: only the latest is kept
        _event(5, "running", task="other"),  # another task's progress stays
        _event(6, "running", attempt=2),  # a retry is not the same progress
        _event(7, "running", attempt=2),  # replaces 6, though the buffer is full
    ):
        assert subscriber.offer(event)

    assert [event.event_id for event in subscriber.take()] == [1, 4, 5, 7]
    assert _sample("notifier_coalesced_updates_total") == coalesced + 3
    # A status change is never coalesced, so a buffer full of them ends the stream.
    for event_id in range(8, 12):
        assert subscriber.offer(_event(event_id, "succeeded", task=f"t{event_id}"))
    assert not subscriber.offer(_event(12, "failed", task="t12"))
    assert subscriber.closed_reason == "slow_client"


async def test_clients_hanging_up_while_their_stream_opens_do_not_break_the_queue(
    notifier: Notifier, auth_url: str
) -> None:
    users = [await sign_up(auth_url) for _ in range(5)]

    async def open_and_hang_up(user: User) -> None:
        async with (
            httpx.AsyncClient(base_url=notifier.url) as client,
            client.stream(
                "GET", "/v1/events", headers={"cookie": f"mf_session={user.token}"}
            ) as response,
        ):
            assert response.status_code == 200

    for _ in range(4):
        await asyncio.gather(*(open_and_hang_up(user) for user in users))
    assert notifier.resources.fanout.ready
    async with httpx.AsyncClient(base_url=notifier.url) as client:
        assert (await client.get("/readyz")).status_code == 200
