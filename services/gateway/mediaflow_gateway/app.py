"""gateway: the public tasks API, credits, and the outbox relay that publishes jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, Router, get
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.enums import OpenAPIMediaType
from litestar.exceptions import NotFoundException
from litestar.handlers import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin

from mediaflow_gateway import openapi, task_api, web_page
from mediaflow_gateway.resources import Resources
from mediaflow_gateway.settings import GatewaySettings
from mediaflow_libs import s3
from mediaflow_libs.app_builder import (
    broker,
    database,
    open_database_and_broker,
    running_in_background,
    service_app,
)
from mediaflow_libs.logging import configure_logging
from mediaflow_libs.outbox import OutboxRelay
from mediaflow_libs.sessions import (
    Identity,
    SessionClient,
    cookie_name,
    listen_for_revocations,
    require_identity,
)
from mediaflow_libs.tasks import Submitter
from mediaflow_libs.telemetry import configure_tracing
from mediaflow_libs.web import serve


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

    @asynccontextmanager
    async def open_resources() -> AsyncIterator[Resources]:
        async with AsyncExitStack() as stack:
            pool, connection, topology = await open_database_and_broker(stack, settings, "gateway")
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
            relay = OutboxRelay(
                pool, connection, poll_interval=settings.outbox_poll_interval_seconds
            )
            await stack.enter_async_context(
                running_in_background(
                    {
                        "outbox-relay": relay.run(),
                        "revocations": listen_for_revocations(connection, topology, sessions),
                    }
                )
            )
            yield Resources(
                settings=settings,
                topology=topology,
                pool=pool,
                amqp=connection,
                sessions=sessions,
                submitter=submitter,
                s3=s3_client,
                s3_public=s3_public,
            )

    return service_app(
        settings,
        [
            task_api.me,
            task_api.submit_task,
            task_api.get_task,
            task_api.list_tasks,
            task_api.cancel_task,
            task_api.delete_task,
            task_api.download,
            openapi_schema,
            *web_page.route_handlers,
        ],
        open_resources=open_resources,
        readiness=[database, broker],
        dependencies={"identity": Provide(_identity)},
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
    )


def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level, settings.log_format)
    configure_tracing("gateway")
    serve("mediaflow_gateway.app:create_app", settings)
