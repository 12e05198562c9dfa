"""Fan-out of task events from RabbitMQ to the event streams open in this process.

Each process consumes one exclusive, auto-delete, server-named queue. A user's
binding (``user.<uid>.#``) is added when their first stream opens and removed
when their last one closes, so the broker only sends this replica the events
someone here is watching. Each stream has a bounded buffer in which waiting progress
updates are coalesced; a stream that falls behind even so is dropped (its client
resumes with ``Last-Event-ID``), so one slow reader never holds up the consumer or
anyone else's events.

When the channel is lost, the events published meanwhile are lost to this
replica's queue, so every open stream is ended and clients resume from the
database; a new queue is declared once the broker answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import AMQPError
from google.protobuf.message import DecodeError

from mediaflow_libs.amqp import Topology
from mediaflow_libs.contracts import CredentialRevoked, TaskEvent
from mediaflow_libs.tasks import RUNNING
from mediaflow_notifier.metrics import COALESCED_UPDATES, DROPPED_UPDATES, UNDECODABLE_MESSAGES

log = structlog.get_logger(__name__)

# Unacked deliveries in flight; dispatching never waits, so this only bounds memory.
PREFETCH = 512
REOPEN_DELAY_SECONDS = 1.0


class FanoutUnavailable(RuntimeError):
    """The events queue is not consuming (broker lost or shutting down)."""


@dataclass(eq=False, slots=True)
class Subscriber:
    """One open stream: which events it wants, and the live events waiting for it.

    ``on_change`` is called whenever there is something new to act on (events, or the
    close), from whatever code caused it; it must not block.
    """

    user_id: str
    task_ids: frozenset[str] | None  # None: every task of the user
    capacity: int
    credential_digest: str | None = None  # which session or API key opened it
    closed_reason: str | None = None
    on_change: Callable[[], None] | None = field(default=None, repr=False)
    # Insertion-ordered, so events leave in the order they came (ascending ids); keyed so
    # that a newer progress update of a task replaces the one still waiting.
    _pending: dict[object, TaskEvent] = field(default_factory=dict, init=False, repr=False)

    def wants(self, event: TaskEvent) -> bool:
        return self.task_ids is None or event.task.id in self.task_ids

    def offer(self, event: TaskEvent) -> bool:
        """Queue a live event; False when the buffer was full and the subscriber is now closed.

        A stream that falls behind gets its progress updates coalesced: a waiting
        ``running`` event of the same task and attempt is superseded by the newer one, which
        takes its turn at the end (status changes are never coalesced). Only a stream whose
        buffer fills up even so is closed; its client resumes with ``Last-Event-ID``.
        """
        if self.closed_reason is not None:
            return False
        key = _coalescing_key(event)
        if key in self._pending:
            del self._pending[key]
            COALESCED_UPDATES.inc()
        elif len(self._pending) >= self.capacity:
            self.close("slow_client")
            DROPPED_UPDATES.inc()  # this one; the waiting ones were counted by close()
            return False
        self._pending[key] = event
        if self.on_change is not None:
            self.on_change()
        return True

    def close(self, reason: str) -> None:
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        # A closed stream sends nothing more; its client resumes from the database.
        DROPPED_UPDATES.inc(len(self._pending))
        self._pending.clear()
        if self.on_change is not None:
            self.on_change()

    def take(self) -> list[TaskEvent]:
        events = list(self._pending.values())
        self._pending.clear()
        return events


def _coalescing_key(event: TaskEvent) -> object:
    if event.task.status == RUNNING:
        return (event.task.id, event.task.attempt)
    return event.event_id


@dataclass
class _LiveQueue:
    """The queue of the current channel and the users bound to it."""

    queue: AbstractQueue
    exchange: AbstractExchange
    bound: set[str] = field(default_factory=set)


@dataclass
class _LockEntry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    holders: int = 0


class _KeyedLocks:
    """One lock per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._entries: dict[str, _LockEntry] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        entry = self._entries.setdefault(key, _LockEntry())
        entry.holders += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.holders -= 1
            if entry.holders == 0:
                del self._entries[key]


class Fanout:
    """This process's events queue and the registry of its open streams, by user."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        topology: Topology,
        *,
        buffer_size: int,
        reopen_delay: float = REOPEN_DELAY_SECONDS,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._buffer_size = buffer_size
        self._reopen_delay = reopen_delay
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._live: _LiveQueue | None = None
        self._live_event = asyncio.Event()
        # Binding and unbinding one user's key must not interleave.
        self._user_locks = _KeyedLocks()
        self._background: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def ready(self) -> bool:
        """True while the queue is consuming and new streams are accepted."""
        return self._live is not None and not self._stopping

    def subscriber_count(self) -> int:
        return sum(len(subscribers) for subscribers in self._subscribers.values())

    async def wait_ready(self) -> None:
        await self._live_event.wait()

    async def run(self) -> None:
        """Consume until cancelled, declaring a fresh queue whenever the channel is lost."""
        try:
            while True:
                try:
                    await self._consume_until_closed()
                except Exception as exc:
                    log.warning("fanout.channel_failed", error=repr(exc))
                finally:
                    # Events published while no queue existed are lost to this replica;
                    # ended streams resume from the database.
                    self._close_all("shutdown" if self._stopping else "broker_lost")
                await asyncio.sleep(self._reopen_delay)
        finally:
            for task in tuple(self._background):
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _consume_until_closed(self) -> None:
        await self._connection.ready()
        # A plain channel rather than a robust one: the queue is server-named and its
        # bindings follow the open streams, so after a reconnect it starts afresh.
        channel = aio_pika.Channel(self._connection, publisher_confirms=False)
        await channel.initialize()
        try:
            await channel.set_qos(prefetch_count=PREFETCH)
            exchange = await channel.get_exchange(self._topology.events_exchange, ensure=True)
            queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
            await queue.consume(self._on_message)
            self._live = _LiveQueue(queue, exchange)
            self._live_event.set()
            log.info("fanout.consuming", queue=queue.name)
            await channel.closed()
            log.warning("fanout.channel_closed", queue=queue.name)
        finally:
            self._live = None
            self._live_event.clear()
            if not channel.is_closed:
                await channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            event = TaskEvent.FromString(message.body)
        except DecodeError:
            UNDECODABLE_MESSAGES.inc()
            log.warning("fanout.undecodable_message", routing_key=message.routing_key)
        else:
            self._dispatch(event)
        # The channel may be gone by now; its deliveries go with it.
        with contextlib.suppress(AMQPError, RuntimeError):
            await message.ack()

    def _dispatch(self, event: TaskEvent) -> None:
        for subscriber in tuple(self._subscribers.get(event.task.user_id, ())):
            if subscriber.wants(event) and not subscriber.offer(event):
                # Its buffer is full: drop the stream rather than wait for it.
                log.info("fanout.slow_client_dropped", user_id=subscriber.user_id)
                self.unsubscribe(subscriber)

    async def subscribe(
        self, user_id: str, task_ids: frozenset[str] | None, credential_digest: str | None = None
    ) -> Subscriber:
        """Register a stream and make sure its user's events reach this queue.

        When this returns with the subscriber open, every event published from now
        on reaches it. When the broker is unavailable the subscriber comes back
        already closed, with the reason.
        """
        subscriber = Subscriber(user_id, task_ids, self._buffer_size, credential_digest)
        if self._stopping:
            subscriber.close("shutdown")
            return subscriber
        self._subscribers.setdefault(user_id, set()).add(subscriber)
        try:
            # Shielded: aiormq closes the whole channel when an RPC is cancelled halfway,
            # and a client that hangs up while its stream opens must not do that.
            await asyncio.shield(self._bind(user_id))
        except asyncio.CancelledError:
            self.unsubscribe(subscriber)
            raise
        except Exception as exc:
            log.warning("fanout.bind_failed", error=repr(exc))
            subscriber.close("broker_lost")
            self.unsubscribe(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a stream (idempotent); the user's binding goes with their last one."""
        subscribers = self._subscribers.get(subscriber.user_id)
        if subscribers is None or subscriber not in subscribers:
            return
        subscribers.discard(subscriber)
        if not subscribers:
            del self._subscribers[subscriber.user_id]
            if self._live is not None:
                self._spawn(self._unbind_if_idle(subscriber.user_id))

    def end_revoked(self, revoked: CredentialRevoked) -> None:
        """End the streams opened with a credential that auth has just revoked."""
        for subscribers in tuple(self._subscribers.values()):
            for subscriber in tuple(subscribers):
                if (revoked.user_id and subscriber.user_id == revoked.user_id) or (
                    revoked.credential_sha256
                    and subscriber.credential_digest == revoked.credential_sha256
                ):
                    subscriber.close("session_revoked")
                    self.unsubscribe(subscriber)

    def shutdown(self) -> None:
        """End every stream so clients reconnect to another replica; refuse new ones."""
        if not self._stopping:
            log.info("fanout.shutting_down", streams=self.subscriber_count())
        self._stopping = True
        self._close_all("shutdown")

    async def _bind(self, user_id: str) -> None:
        async with self._user_locks.hold(user_id):
            live = self._live
            if live is None:
                raise FanoutUnavailable("the events queue is not consuming")
            if user_id not in live.bound:
                await live.queue.bind(live.exchange, Topology.user_binding_key(user_id))
                live.bound.add(user_id)

    async def _unbind_if_idle(self, user_id: str) -> None:
        async with self._user_locks.hold(user_id):
            live = self._live
            if live is None or user_id in self._subscribers:
                return
            # Unbind even when not marked bound: a bind cancelled mid-flight may have landed.
            live.bound.discard(user_id)
            try:
                await live.queue.unbind(live.exchange, Topology.user_binding_key(user_id))
            except Exception as exc:
                log.warning("fanout.unbind_failed", error=repr(exc))

    def _close_all(self, reason: str) -> None:
        subscribers = [s for group in self._subscribers.values() for s in group]
        self._subscribers.clear()
        for subscriber in subscribers:
            subscriber.close(reason)

    async def settled(self) -> None:
        """Wait until the binding changes asked for so far have reached the broker."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
