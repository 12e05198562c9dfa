"""notifier: fans task events out to their users over Server-Sent Events."""

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
from litestar.datastructures import State
from litestar.di import Provide

from mediaflow_libs import amqp, db
from mediaflow_libs.csrf import refuse_cross_site
from mediaflow_libs.logging import configure_logging
from mediaflow_libs.operator_routes import ReadinessCheck, health_routes
from mediaflow_libs.problems import exception_handlers
from mediaflow_libs.revocations import listen_for_revocations
from mediaflow_libs.routing import around_routing
from mediaflow_libs.serving import serve
from mediaflow_libs.session_client import SessionClient
from mediaflow_notifier import sse
from mediaflow_notifier.fanout import Fanout
from mediaflow_notifier.heartbeat import Heartbeat
from mediaflow_notifier.resources import Resources, resources_of
from mediaflow_notifier.settings import NotifierSettings

FANOUT_START_TIMEOUT_SECONDS = 15.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

SignalHandler = Callable[[int, FrameType | None], Any]


def create_app(settings: NotifierSettings | None = None) -> Litestar:
    settings = settings or NotifierSettings()
    resources = Resources(settings=settings, topology=amqp.Topology(settings.amqp_namespace))

    @asynccontextmanager
    async def database(_: Litestar) -> AsyncIterator[None]:
        async with db.open_pool(settings.database_url, settings.database_pool_size) as pool:
            resources.pool = pool
            yield

    @asynccontextmanager
    async def broker(_: Litestar) -> AsyncIterator[None]:
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
        pinging = asyncio.create_task(resources.heartbeat.run(), name="sse-heartbeat")
        try:
            yield
        finally:
            pinging.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinging

    @asynccontextmanager
    async def sessions(_: Litestar) -> AsyncIterator[None]:
        client = SessionClient.from_settings(
            settings,
            service_name="notifier",
            service_secret=settings.service_secret.get_secret_value(),
        )
        resources.sessions = client
        revocations = asyncio.create_task(
            listen_for_revocations(
                resources.amqp, resources.topology, client, also=resources.fanout.end_revoked
            ),
            name="revocations",
        )
        try:
            yield
        finally:
            revocations.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await revocations
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

    def readiness(state: State) -> list[ReadinessCheck]:
        async def database() -> None:
            async with resources_of(state).pool.acquire() as con:
                await con.fetchval("SELECT 1")

        async def broker() -> None:
            if resources_of(state).amqp.is_closed or not resources_of(state).fanout.ready:
                raise RuntimeError("the events queue is not consuming")

        return [database, broker]

    return around_routing(
        Litestar(
            # Our logging (structlog, JSON): Litestar would put the root logger at INFO
            # with a plain-text format of its own, mixing text lines into the JSON stream.
            logging_config=None,
            route_handlers=[sse.events, *health_routes(readiness, settings)],
            lifespan=[database, broker, fanout, heartbeat, sessions, end_streams_on_stop_signal],
            state=State({"resources": resources}),
            # Its routes are all safe today; a new unsafe one is covered from the start.
            guards=[refuse_cross_site(settings.public_url)],
            dependencies={"resources": Provide(resources_of, sync_to_thread=False)},
            exception_handlers=exception_handlers,  # type: ignore[arg-type]
            openapi_config=None,
            debug=False,
        ),
        answer_head=False,  # /v1/events is an endless stream
    )


def main() -> None:
    settings = NotifierSettings()
    configure_logging("notifier", settings.log_level, settings.log_format)
    serve("mediaflow_notifier.app:create_app", settings)
