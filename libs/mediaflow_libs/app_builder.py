"""One way to build a service's Litestar app, so that each ``app.py`` says only what is its
own (routes, resources, readiness) and every service answers the same way: our logging,
the operator routes, problem documents for every failure, the request context around
routing, and the cross-site check on every unsafe request."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, Protocol

import asyncpg
from aio_pika.abc import AbstractRobustConnection
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.types import ControllerRouterHandler, Guard

from mediaflow_libs import amqp, db
from mediaflow_libs.csrf import refuse_cross_site
from mediaflow_libs.operator_routes import ReadinessCheck, health_routes
from mediaflow_libs.problems import exception_handlers
from mediaflow_libs.routing import around_routing
from mediaflow_libs.settings import ServiceSettings

Lifespan = Callable[[Litestar], AbstractAsyncContextManager[None]]
# A dependency probe of ``/readyz``, given the app's resources; its name is reported.
ResourceCheck = Callable[[Any], Awaitable[None]]


def resources_of(state: State) -> Any:
    """The app's resources (``state.resources``), as the ``resources`` dependency."""
    return state.resources


class _HasPool(Protocol):
    pool: asyncpg.Pool


class _HasBroker(Protocol):
    amqp: AbstractRobustConnection


async def database(resources: _HasPool) -> None:
    async with resources.pool.acquire() as con:
        await con.fetchval("SELECT 1")


async def broker(resources: _HasBroker) -> None:
    if resources.amqp.is_closed:
        raise RuntimeError("the RabbitMQ connection is closed")


async def open_database_and_broker(
    stack: AsyncExitStack, settings: ServiceSettings, service_name: str
) -> tuple[asyncpg.Pool, AbstractRobustConnection, amqp.Topology]:
    """The pool, and a broker connection with the topology declared, each closed with
    ``stack``: what every HTTP service opens first."""
    topology = amqp.Topology(settings.amqp_namespace)
    pool = await stack.enter_async_context(
        db.open_pool(settings.database_url, settings.database_pool_size)
    )
    connection = await stack.enter_async_context(
        amqp.open_connection(settings.amqp_url, service_name)
    )
    channel = await connection.channel()
    await amqp.declare_topology(channel, topology)
    await channel.close()
    return pool, connection, topology


@asynccontextmanager
async def running_in_background(
    work: Mapping[str, Coroutine[Any, Any, None]],
) -> AsyncIterator[None]:
    """Run each coroutine as a task of its name while the block runs; cancelled after it."""
    tasks = [asyncio.create_task(coroutine, name=name) for name, coroutine in work.items()]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _bound(check: ResourceCheck, state: State) -> ReadinessCheck:
    async def bound() -> None:
        await check(resources_of(state))

    bound.__name__ = check.__name__  # /readyz names the failing dependency
    return bound


def _opening(open_resources: Callable[[], AbstractAsyncContextManager[Any]]) -> Lifespan:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_resources() as resources:
            app.state.resources = resources
            yield

    return lifespan


def _app(
    route_handlers: Sequence[ControllerRouterHandler], *, answer_head: bool = True, **options: Any
) -> Litestar:
    """What every app of ours is: our logging, problem documents for every failure, and the
    request context around routing."""
    return around_routing(
        Litestar(
            # Our logging (structlog, JSON): Litestar would put the root logger at INFO
            # with a plain-text format of its own, mixing text lines into the JSON stream.
            logging_config=None,
            route_handlers=route_handlers,
            exception_handlers=exception_handlers,  # type: ignore[arg-type]
            debug=False,
            **options,
        ),
        answer_head=answer_head,
    )


def service_app(
    settings: ServiceSettings,
    route_handlers: Sequence[ControllerRouterHandler],
    *,
    open_resources: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
    lifespan: Sequence[Lifespan] = (),
    readiness: Sequence[ResourceCheck] = (),
    state: State | None = None,
    guards: Sequence[Guard] = (),
    dependencies: Mapping[str, Provide] | None = None,
    openapi_config: OpenAPIConfig | None = None,
    answer_head: bool = True,
) -> Litestar:
    """A service's app: ``route_handlers`` and the operator routes (``/readyz`` running
    ``readiness``), the ``resources`` dependency (``open_resources`` opens them for the
    app's life, before ``lifespan``, or ``state`` holds them), the cross-site check before
    ``guards``, and problem documents for every failure. ``answer_head`` as
    :func:`~mediaflow_libs.routing.around_routing` takes it."""
    operator_routes = health_routes(
        lambda state: [_bound(check, state) for check in readiness], settings
    )
    return _app(
        [*route_handlers, *operator_routes],
        answer_head=answer_head,
        lifespan=[*([_opening(open_resources)] if open_resources else []), *lifespan],
        state=state,
        # Every unsafe route is covered, a new one from the start too.
        guards=[refuse_cross_site(settings.public_url), *guards],
        dependencies={
            "resources": Provide(resources_of, sync_to_thread=False),
            **(dependencies or {}),
        },
        openapi_config=openapi_config,
    )


def operator_app(
    readiness: Sequence[ReadinessCheck],
    settings: ServiceSettings,
    extra_facts: dict[str, Any] | None = None,
) -> Litestar:
    """An app of the operator routes alone (``/healthz``, ``/readyz``, ``/metrics``,
    ``/diagnostics`` with ``extra_facts``), with problem documents for everything else: the
    port of a service whose work is not HTTP (the worker)."""
    return _app(
        health_routes(lambda _: list(readiness), settings, extra_facts), openapi_config=None
    )
