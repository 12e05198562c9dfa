"""What the notifier opens for its life, in order, each resource set on its
:class:`~mediaflow_notifier.resources.Resources` as it opens, and closed in reverse: the
database, the broker, the events fan-out, the heartbeat, the session client (with the
revocations it listens for), and the stop signal's end of every open stream."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from litestar import Litestar

from mediaflow_libs import amqp, db
from mediaflow_libs.app_builder import Lifespan, running_in_background
from mediaflow_libs.revocations import listen_for_revocations
from mediaflow_libs.session_client import SessionClient
from mediaflow_notifier.fanout import Fanout
from mediaflow_notifier.heartbeat import Heartbeat
from mediaflow_notifier.resources import Resources

FANOUT_START_TIMEOUT_SECONDS = 15.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

SignalHandler = Callable[[int, FrameType | None], Any]


def lifespans(resources: Resources) -> list[Lifespan]:
    settings = resources.settings

    @asynccontextmanager
    async def open_database(_: Litestar) -> AsyncIterator[None]:
        async with db.open_pool(settings.database_url, settings.database_pool_size) as pool:
            resources.pool = pool
            yield

    @asynccontextmanager
    async def open_broker(_: Litestar) -> AsyncIterator[None]:
        async with amqp.open_connection(settings.amqp_url, "notifier") as connection:
            channel = await connection.channel()
            await amqp.declare_topology(channel, resources.topology)
            await channel.close()
            resources.amqp = connection
            yield

    @asynccontextmanager
    async def fanout(_: Litestar) -> AsyncIterator[None]:
        events = Fanout(resources.amqp, resources.topology, buffer_size=settings.sse_client_buffer)
        consumer = asyncio.create_task(events.run(), name="notifier-fanout")
        try:
            async with asyncio.timeout(FANOUT_START_TIMEOUT_SECONDS):
                await events.wait_ready()
            resources.fanout = events
            yield
        finally:
            events.shutdown()
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer

    @asynccontextmanager
    async def heartbeat(_: Litestar) -> AsyncIterator[None]:
        resources.heartbeat = Heartbeat(settings.sse_heartbeat_seconds)
        async with running_in_background({"sse-heartbeat": resources.heartbeat.run()}):
            yield

    @asynccontextmanager
    async def sessions(_: Litestar) -> AsyncIterator[None]:
        client = SessionClient.from_settings(
            settings,
            service_name="notifier",
            service_secret=settings.service_secret.get_secret_value(),
        )
        resources.sessions = client
        revocations = listen_for_revocations(
            resources.amqp, resources.topology, client, also=resources.fanout.end_revoked
        )
        try:
            async with running_in_background({"revocations": revocations}):
                yield
        finally:
            await client.aclose()

    @asynccontextmanager
    async def end_streams_on_stop_signal(_: Litestar) -> AsyncIterator[None]:
        """uvicorn lets open responses finish before it shuts the app down, and event
        streams never finish on their own: end them when the stop signal arrives, so
        clients reconnect to another replica at once instead of after the grace period."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        # Chain onto the server's own handler; with none (SIG_DFL) the process just dies.
        previous: dict[int, SignalHandler] = {}
        for stop_signal in _STOP_SIGNALS:
            handler = signal.getsignal(stop_signal)
            if callable(handler):
                previous[stop_signal] = handler

        def on_stop_signal(signum: int, frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(resources.fanout.shutdown)
            previous[signum](signum, frame)

        for sig in previous:
            signal.signal(sig, on_stop_signal)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                if signal.getsignal(sig) is on_stop_signal:
                    signal.signal(sig, handler)

    return [
        open_database,
        open_broker,
        fanout,
        heartbeat,
        sessions,
        end_streams_on_stop_signal,
    ]
