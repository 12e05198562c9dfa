"""The outbox relay against the real PostgreSQL and RabbitMQ, on a database of its own (the
session database's outbox is drained by other tests' relays)."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractQueue, AbstractRobustConnection

from libs.tests.support import private_database
from mediaflow_libs import db, outbox, task_transitions
from mediaflow_libs.amqp import Topology
from mediaflow_libs.contracts import TaskEvent
from mediaflow_libs.migrate import apply_migrations
from mediaflow_libs.task_view import message_view, task_view


@pytest.fixture
async def private_pool(infra) -> AsyncIterator[asyncpg.Pool]:  # type: ignore[no-untyped-def]
    async with private_database(infra, "outbox") as url:
        await apply_migrations(url)
        async with db.open_pool(url, size=4) as pool:
            yield pool


async def _pending(pool: asyncpg.Pool) -> list[str]:
    rows = await pool.fetch("SELECT routing_key FROM media.outbox ORDER BY id")
    return [row["routing_key"] for row in rows]


@asynccontextmanager
async def _routed_exchange(
    infra,  # type: ignore[no-untyped-def]
) -> AsyncIterator[tuple[AbstractRobustConnection, str, AbstractQueue]]:
    """A connection, an exchange of its own, and a queue bound to it for routing key `routed`."""
    exchange_name = f"{infra.amqp_namespace}.outbox-test-{secrets.token_hex(3)}"
    connection = await aio_pika.connect_robust(infra.amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(exchange_name, auto_delete=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key="routed")
        yield connection, exchange_name, queue


async def _received(queue: AbstractQueue, count: int) -> list[int]:
    """The ``n`` header of the next ``count`` messages of ``queue``, acknowledged."""
    received = []
    async with asyncio.timeout(10):
        while len(received) < count:
            message = await queue.get(fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            await message.ack()
            received.append(message.headers["n"])
    return received


async def test_relay_deletes_each_confirmed_row_and_keeps_a_returned_one(
    infra,
    private_pool: asyncpg.Pool,  # type: ignore[no-untyped-def]
) -> None:
    async with _routed_exchange(infra) as (connection, exchange_name, queue):
        async with private_pool.acquire() as con:
            for n, (routing_key, mandatory) in enumerate(
                [
                    ("routed", True),
                    ("unrouted", True),  # a job no queue takes: returned, so it must stay
                    ("routed", True),
                    ("unrouted", False),  # an event nobody listens to: confirmed, so it is sent
                    ("routed", True),
                ]
            ):
                await outbox.enqueue(
                    con,
                    exchange=exchange_name,
                    routing_key=routing_key,
                    body=routing_key.encode(),
                    mandatory=mandatory,
                    headers={"n": n},
                )
        relay = outbox.OutboxRelay(private_pool, connection, poll_interval=0.1)
        running = asyncio.create_task(relay.run())
        try:
            async with asyncio.timeout(15):
                while await _pending(private_pool) != ["unrouted"]:
                    await asyncio.sleep(0.05)
            # Rounds go on (a poll every 0.1 s) and the returned row is still not sent.
            await asyncio.sleep(0.5)
            assert await _pending(private_pool) == ["unrouted"]
        finally:
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
        received = await _received(queue, 3)
        # In outbox order, each once.
        assert received == [0, 2, 4]
        assert await queue.get(fail=False) is None


async def test_rows_for_a_missing_exchange_wait_without_holding_up_the_others(
    infra,
    private_pool: asyncpg.Pool,  # type: ignore[no-untyped-def]
) -> None:
    gone = f"{infra.amqp_namespace}.outbox-gone-{secrets.token_hex(3)}"  # never declared
    async with _routed_exchange(infra) as (connection, exchange_name, queue):
        async with private_pool.acquire() as con:
            # More rows for the missing exchange than a batch holds, all ahead of the others.
            for n, target in enumerate([gone, gone, gone, exchange_name, gone, exchange_name]):
                await outbox.enqueue(
                    con,
                    exchange=target,
                    routing_key="routed" if target == exchange_name else "lost",
                    body=b"x",
                    mandatory=True,
                    headers={"n": n},
                )
        relay = outbox.OutboxRelay(private_pool, connection, poll_interval=0.1, batch_size=2)
        running = asyncio.create_task(relay.run())
        try:
            async with asyncio.timeout(15):
                while await _pending(private_pool) != ["lost"] * 4:
                    await asyncio.sleep(0.05)
        finally:
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
        received = await _received(queue, 2)
        assert received == [3, 5]
        # The waiting rows are kept, for when the exchange exists again.
        assert (
            await private_pool.fetchval(
                "SELECT count(*) FROM media.outbox WHERE exchange = $1", gone
            )
            == 4
        )


async def test_a_task_event_message_is_built_from_its_row_with_its_id(
    infra,
    private_pool: asyncpg.Pool,  # type: ignore[no-untyped-def]
) -> None:
    async with _routed_exchange(infra) as (connection, exchange_name, queue):
        async with private_pool.acquire() as con, con.transaction():
            row = await con.fetchrow(
                """INSERT INTO media.tasks (user_id, source_url, cost)
                   VALUES ($1, 'https://x.example/v', 1) RETURNING *""",
                str(uuid.uuid4()),
            )
            # Past one varint byte.
            await con.execute(
                "SELECT setval(pg_get_serial_sequence('media.task_events', 'id'), 300)"
            )
            event_id = await task_transitions.record_event(con, Topology("unused"), row)
            # The outbox row names the event and holds no message of its own.
            assert await con.fetchval(
                "SELECT body IS NULL FROM media.outbox WHERE task_event_id = $1", event_id
            )
            await con.execute(
                """UPDATE media.outbox SET exchange = $1, routing_key = 'routed',
                       headers = headers || '{"n": 0}' WHERE task_event_id = $2""",
                exchange_name,
                event_id,
            )
        relay = outbox.OutboxRelay(private_pool, connection, poll_interval=0.1)
        running = asyncio.create_task(relay.run())
        try:
            async with asyncio.timeout(10):
                while True:
                    message = await queue.get(fail=False)
                    if message is not None:
                        break
                    await asyncio.sleep(0.05)
        finally:
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
        await message.ack()
    assert message.headers["message_type"] == "mediaflow.v1.TaskEvent"
    event = TaskEvent.FromString(message.body)
    assert event_id == 301
    assert event.event_id == event_id
    assert message_view(event.task) == task_view(row)


class _HeldRelay(outbox.OutboxRelay):
    """A relay that stops in its first publish until let go: one that took a batch and then
    stalled (a busy event loop, a slow broker) while others go on."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def _drain_batch(self, channel) -> int:  # type: ignore[no-untyped-def]
        original = channel.basic_publish

        async def held(*args: object, **kwargs: object) -> object:
            self.holding.set()
            await self.release.wait()
            return await original(*args, **kwargs)

        channel.basic_publish = held
        try:
            return await super()._drain_batch(channel)
        finally:
            channel.basic_publish = original


class _CountedRelay(outbox.OutboxRelay):
    """A relay that says when it finished a round."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.rounds = asyncio.Event()

    async def _drain_batch(self, channel) -> int:  # type: ignore[no-untyped-def]
        try:
            return await super()._drain_batch(channel)
        finally:
            self.rounds.set()


async def test_a_row_never_overtakes_an_earlier_one_another_relay_holds(
    infra,
    private_pool: asyncpg.Pool,  # type: ignore[no-untyped-def]
) -> None:
    # The events of a user must reach the broker in id order: the notifier passes them on
    # as they come and a client resumes after the last id it got.
    async with _routed_exchange(infra) as (connection, exchange_name, queue):

        async def enqueue(n: int) -> None:
            async with private_pool.acquire() as con:
                await outbox.enqueue(
                    con,
                    exchange=exchange_name,
                    routing_key="routed",
                    body=b"x",
                    mandatory=False,
                    headers={"n": n},
                )

        await enqueue(0)
        await enqueue(1)
        stalled = _HeldRelay(private_pool, connection, poll_interval=0.1)
        other = _CountedRelay(private_pool, connection, poll_interval=0.1)
        running = [asyncio.create_task(stalled.run())]
        try:
            async with asyncio.timeout(15):
                await stalled.holding.wait()  # rows 0 and 1 taken, not yet published
                await enqueue(2)
                running.append(asyncio.create_task(other.run()))
                await other.rounds.wait()  # the other relay had its chance at row 2
            stalled.release.set()
            received = await _received(queue, 3)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        assert received == [0, 1, 2]
