"""gateway: the public tasks API, credits, and the outbox relay that publishes jobs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, Router, get
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.enums import OpenAPIMediaType
from litestar.exceptions import NotFoundException
from litestar.handlers import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin

from mediaflow_gateway import openapi, task_api, web_page
from mediaflow_gateway.resources import Resources
from mediaflow_gateway.settings import GatewaySettings
from mediaflow_gateway.submissions import Submitter
from mediaflow_libs import amqp, db, s3
from mediaflow_libs.credentials import cookie_name
from mediaflow_libs.csrf import refuse_cross_site
from mediaflow_libs.logging import configure_logging
from mediaflow_libs.operator_routes import health_routes
from mediaflow_libs.outbox import OutboxRelay
from mediaflow_libs.problems import exception_handlers
from mediaflow_libs.revocations import listen_for_revocations
from mediaflow_libs.routing import around_routing
from mediaflow_libs.serving import serve
from mediaflow_libs.session_client import Identity, SessionClient, require_identity
from mediaflow_libs.telemetry import configure_tracing


def _resources(state: State) -> Resources:
    resources: Resources = state.resources
    return resources


async def _identity(
    request: Request[Any, Any, Any], resources: NamedDependency[Resources]
) -> Identity:
    # Taking `resources` orders the two dependencies: Litestar resolves a batch of
    # independent ones in a task group per request, one after another inline.
    return await require_identity(request, resources.sessions, resources.settings.public_url)


@get("/v1/openapi.json", include_in_schema=False, media_type=OpenAPIMediaType.OPENAPI_JSON)
async def openapi_schema(
    request: Request[Any, Any, Any], resources: NamedDependency[Resources]
) -> Response[bytes]:
    """The published schema (API.md's routes), from a plain route: Litestar's own schema
    router would claim every unknown path beside it and answer them with HTML."""
    schema = openapi.published(
        request.app.openapi_schema.to_schema(), cookie_name(resources.settings.public_url)
    )
    return Response(
        JsonRenderPlugin().render_json(request, schema), media_type=OpenAPIMediaType.OPENAPI_JSON
    )


def _no_schema_router(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    raise NotFoundException()


def create_app(settings: GatewaySettings | None = None) -> Litestar:
    settings = settings or GatewaySettings()
    topology = amqp.Topology(settings.amqp_namespace)

    @asynccontextmanager
    async def resources(app: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            pool = await stack.enter_async_context(
                db.open_pool(settings.database_url, settings.database_pool_size)
            )
            connection = await stack.enter_async_context(
                amqp.open_connection(settings.amqp_url, "gateway")
            )
            channel = await connection.channel()
            await amqp.declare_topology(channel, topology)
            await channel.close()
            s3_client = await stack.enter_async_context(s3.open_s3(settings))
            s3_public = await stack.enter_async_context(s3.open_s3(settings, public=True))
            sessions = SessionClient.from_settings(
                settings,
                service_name="gateway",
                service_secret=settings.service_secret.get_secret_value(),
            )
            stack.push_async_callback(sessions.aclose)
            submitter = Submitter(
                pool,
                topology,
                cost=settings.task_cost_credits,
                signup_credits=settings.signup_credits,
                submits_per_window=settings.task_submits_per_minute,
                window_seconds=task_api.SUBMIT_WINDOW_SECONDS,
            )
            stack.push_async_callback(submitter.aclose)
            app.state.resources = Resources(
                settings=settings,
                topology=topology,
                pool=pool,
                amqp=connection,
                sessions=sessions,
                submitter=submitter,
                s3=s3_client,
                s3_public=s3_public,
            )
            relay = OutboxRelay(
                pool, connection, poll_interval=settings.outbox_poll_interval_seconds
            )
            background = [
                asyncio.create_task(relay.run(), name="outbox-relay"),
                asyncio.create_task(
                    listen_for_revocations(connection, topology, sessions), name="revocations"
                ),
            ]
            try:
                yield
            finally:
                for task in background:
                    task.cancel()
                for task in background:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    def readiness(state: State) -> list[Any]:
        async def database() -> None:
            async with _resources(state).pool.acquire() as con:
                await con.fetchval("SELECT 1")

        async def broker() -> None:
            if _resources(state).amqp.is_closed:
                raise RuntimeError("the RabbitMQ connection is closed")

        return [database, broker]

    return around_routing(
        Litestar(
            # Our logging (structlog, JSON): Litestar would put the root logger at INFO
            # with a plain-text format of its own, mixing text lines into the JSON stream.
            logging_config=None,
            route_handlers=[
                task_api.me,
                task_api.submit_task,
                task_api.get_task,
                task_api.list_tasks,
                task_api.cancel_task,
                task_api.delete_task,
                task_api.download,
                openapi_schema,
                *web_page.route_handlers,
                *health_routes(readiness, settings),
            ],
            lifespan=[resources],
            guards=[refuse_cross_site(settings.public_url)],
            dependencies={
                "resources": Provide(_resources, sync_to_thread=False),
                "identity": Provide(_identity),
            },
            exception_handlers=exception_handlers,  # type: ignore[arg-type]
            openapi_config=OpenAPIConfig(
                title="mediaflow",
                version="1",
                description="Turn media links into stored files with live progress.",
                # Litestar mounts a router for its schema pages whatever the configuration; each
                # of its routes (a catch-all among them) answers a problem 404 instead.
                openapi_router=Router(
                    "/v1/openapi",
                    route_handlers=[],
                    include_in_schema=False,
                    guards=[_no_schema_router],
                ),
                render_plugins=[JsonRenderPlugin()],
            ),
            debug=False,
        )
    )


def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level, settings.log_format)
    configure_tracing("gateway")
    serve("mediaflow_gateway.app:create_app", settings)
