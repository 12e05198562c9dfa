"""Transactional outbox: messages are written in the transaction of the change they
announce, and a relay publishes them with publisher confirms, deleting each row only
after the broker confirmed it.

Several relays may run (every service has one), but one publishes at a time: a batch is
taken under a transaction-scoped advisory lock, held until its rows are confirmed and
deleted. Relays publishing side by side (``SKIP LOCKED`` alone) let a later row reach the
broker before an earlier one that another relay still holds; the notifier passes live
events on in the order they arrive and a client resumes after the last id it got, so an
event overtaken that way could be skipped for good (for its task, or past the client's
``Last-Event-ID``). One publisher at a time keeps each user's events in id order on the
broker, the order they commit in (see media.record_task_event)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiormq
import asyncpg
import structlog
from aio_pika.abc import AbstractRobustConnection
from asyncpg.pool import PoolConnectionProxy
from prometheus_client import Counter, Gauge, Histogram

from mediaflow_libs import db, tasks

log = structlog.get_logger(__name__)

NOTIFY_CHANNEL = "media_outbox"
# The advisory lock of the one relay publishing (see the module's docstring).
PUBLISHING_LOCK = "SELECT pg_try_advisory_xact_lock(hashtextextended('media.outbox:publishing', 0))"
# How long rows for an exchange found missing wait before it is looked for again.
MISSING_EXCHANGE_RETRY_SECONDS = 30.0

OUTBOX_PUBLISHED = Counter("outbox_published_total", "Outbox messages confirmed by the broker")
OUTBOX_PUBLISH_FAILURES = Counter("outbox_publish_failures_total", "Failed outbox relay rounds")
OUTBOX_BACKLOG = Gauge("outbox_backlog_messages", "Outbox rows seen waiting at the last round")
OUTBOX_LAG = Histogram(
    "outbox_publish_lag_seconds",
    "Time from an outbox row's commit to the broker's confirm",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


async def enqueue(
    con: db.Connection,
    *,
    exchange: str,
    routing_key: str,
    body: bytes,
    mandatory: bool,
    headers: dict[str, Any] | None = None,
) -> None:
    await con.execute(
        "SELECT media.enqueue_outbox($1, $2, $3, $4, $5)",
        exchange,
        routing_key,
        body,
        headers or {},
        mandatory,
    )


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        connection: AbstractRobustConnection,
        *,
        poll_interval: float = 1.0,
        batch_size: int = 100,
    ) -> None:
        self._pool = pool
        self._connection = connection
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._wake = asyncio.Event()
        # A publish to an exchange that does not exist closes the channel, failing the whole
        # batch; rows for one (a namespace renamed, a topology deleted) would stop every row
        # behind them, round after round. Each exchange is looked up once before its first
        # publish; the rows of a missing one wait, kept, while the others go on.
        self._existing: set[str] = {""}  # "" is the default exchange, always there
        # exchange -> (when to look for it again, its rows then): they count as backlog.
        self._missing: dict[str, tuple[float, int]] = {}

    async def run(self) -> None:
        """Publish until cancelled; recovers on its own from database or broker outages."""
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                OUTBOX_PUBLISH_FAILURES.inc()
                log.warning("outbox.relay_error", error=repr(exc))
                await asyncio.sleep(self._poll_interval)

    async def _run_once(self) -> None:
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        listener = await self._pool.acquire()
        try:
            await listener.add_listener(NOTIFY_CHANNEL, self._on_notify)
            while True:
                underlay = await channel.get_underlay_channel()
                assert isinstance(underlay, aiormq.Channel)  # the one implementation
                published = await self._drain_batch(underlay)
                if published < self._batch_size:
                    # LISTEN/NOTIFY wakes us at once; the timeout is the fallback. Not
                    # wait_for: on 3.11 it swallows a cancel that lands with the wake-up,
                    # and the relay would never stop.
                    try:
                        async with asyncio.timeout(self._poll_interval):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                    self._wake.clear()
        finally:
            await _release_quietly(self._pool, listener, self._on_notify)
            if not channel.is_closed:
                await channel.close()

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _drain_batch(self, channel: aiormq.Channel) -> int:
        """Publish one batch and delete the rows the broker confirmed; returns how many. A
        row that is returned (a mandatory message no queue took) or nacked stays for the
        next round; a closed channel fails the round after the deletion."""
        now = time.monotonic()
        self._missing = {name: m for name, m in self._missing.items() if m[0] > now}
        async with self._pool.acquire() as con, con.transaction():
            if not await con.fetchval(PUBLISHING_LOCK):
                # Another relay is publishing; it is woken by the same notifications, so
                # the rows committed meanwhile are its next batch.
                return 0
            # A task event's row has no body: its message is built from the event.
            rows = await con.fetch(
                """SELECT o.id, o.exchange, o.routing_key, o.body, o.headers, o.mandatory,
                          o.task_event_id, e.user_id AS event_user_id, e.task AS event_task,
                          extract(epoch FROM clock_timestamp() - o.created_at) AS age
                   FROM media.outbox o LEFT JOIN media.task_events e ON e.id = o.task_event_id
                   WHERE o.exchange <> ALL($2::text[])
                   ORDER BY o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED""",
                self._batch_size,
                list(self._missing),
            )
            missing = await self._look_up_exchanges(con, {row["exchange"] for row in rows})
            OUTBOX_BACKLOG.set(len(rows) + sum(waiting for _, waiting in self._missing.values()))
            if not rows:
                return 0
            if missing:
                # Taken out of this batch; the next one is selected without them.
                rows = [row for row in rows if row["exchange"] not in missing]
                if not rows:
                    return self._batch_size  # go on at once with the rows behind them
            # All in flight at once, their confirms awaited together. The channel writes
            # them in id order (publishes queue for its lock first come, first served), so
            # the events of one task reach the broker in order.
            outcomes = await asyncio.gather(
                *(self._publish(channel, row) for row in rows),
                return_exceptions=True,
            )
            confirmed = [
                row for row, outcome in zip(rows, outcomes, strict=True) if outcome is None
            ]
            if confirmed:
                await con.execute(
                    "DELETE FROM media.outbox WHERE id = ANY($1::bigint[])",
                    [row["id"] for row in confirmed],
                )
            for row in confirmed:
                OUTBOX_LAG.observe(float(row["age"]))
            OUTBOX_PUBLISHED.inc(len(confirmed))
        failures = [outcome for outcome in outcomes if outcome is not None]
        if failures:
            OUTBOX_PUBLISH_FAILURES.inc()
            for failure in failures:
                if not isinstance(failure, Exception):
                    raise failure  # a cancellation, not a failed publish
            log.warning(
                "outbox.publish_failed",
                failed=len(failures),
                confirmed=len(confirmed),
                error=repr(failures[0]),
            )
            if channel.is_closed:
                # An exchange may have gone since it was looked up: look again next time.
                self._existing = {""}
                raise failures[0]
        # Less than a full batch, so the relay waits before it tries the failures again.
        return len(confirmed)

    async def _look_up_exchanges(self, con: db.Connection, names: set[str]) -> set[str]:
        """Of ``names``, those that do not exist (now waiting, logged); the others are
        remembered as existing."""
        missing = set()
        for name in names - self._existing:
            channel = await self._connection.channel()
            try:
                await channel.get_exchange(name, ensure=True)  # a passive declare
            except aiormq.exceptions.ChannelNotFoundEntity:
                missing.add(name)
                waiting = await con.fetchval(
                    "SELECT count(*) FROM media.outbox WHERE exchange = $1", name
                )
                retry_at = time.monotonic() + MISSING_EXCHANGE_RETRY_SECONDS
                self._missing[name] = (retry_at, waiting)
                log.warning(
                    "outbox.exchange_missing",
                    exchange=name,
                    waiting=waiting,
                    retry_seconds=MISSING_EXCHANGE_RETRY_SECONDS,
                    hint="its rows wait in the outbox; declare the exchange (start a service "
                    "of that AMQP_NAMESPACE) or delete them",
                )
            else:
                self._existing.add(name)
            finally:
                if not channel.is_closed:
                    await channel.close()
        return missing

    @staticmethod
    async def _publish(channel: aiormq.Channel, row: asyncpg.Record) -> None:
        # aiormq's channel itself, not aio-pika's Message and Exchange: a relay publishes
        # every message of the system, and those layers cost it a third of its time. Not
        # waiting for each frame to reach the socket (`wait=False`) lets a batch go out in
        # one write; the broker's confirm (or a return, or a nack: raised) is what counts.
        body = row["body"]
        if row["task_event_id"] is not None:
            body = tasks.event_body(row["task_event_id"], row["event_user_id"], row["event_task"])
        await channel.basic_publish(
            body,
            exchange=row["exchange"],
            routing_key=row["routing_key"],
            properties=aiormq.spec.Basic.Properties(
                headers=row["headers"],
                message_id=f"outbox-{row['id']}",
                content_type="application/x-protobuf",
                delivery_mode=2,  # persistent
            ),
            mandatory=row["mandatory"],
            wait=False,
        )


async def _release_quietly(
    pool: asyncpg.Pool, con: PoolConnectionProxy, listener: Callable[..., None]
) -> None:
    # asyncpg warns about releasing a connection that still has a listener (and under
    # warnings-as-errors refuses, leaking it so that pool.close() hangs): drop ours first.
    try:
        await con.remove_listener(NOTIFY_CHANNEL, listener)
    except Exception as exc:
        log.debug("outbox.unlisten_failed", error=repr(exc))
    # Releasing resets the connection (UNLISTEN *); a broken one is discarded by the pool.
    try:
        await pool.release(con, timeout=5)
    except Exception as exc:
        log.debug("outbox.listener_release_failed", error=repr(exc))
