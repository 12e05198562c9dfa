"""Fixtures of the notifier tests: the real auth app and the notifier app served by uvicorn
on free ports, real PostgreSQL and RabbitMQ, and an outbox relay publishing task events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractRobustConnection

from mediaflow_auth.app import create_app as create_auth_app
from mediaflow_auth.settings import AuthSettings
from mediaflow_libs import amqp
from mediaflow_notifier.app import create_app as create_notifier_app
from services.notifier.tests.support import (
    Notifier,
    Relay,
    Tasks,
    User,
    notifier_settings,
    serve_in_process,
    sign_up,
)


@pytest.fixture(scope="session")
async def auth_url(infra: Any) -> AsyncIterator[str]:
    async with serve_in_process(create_auth_app(AuthSettings(**infra.settings_kwargs()))) as url:
        yield url


@pytest.fixture(scope="session")
async def notifier(infra: Any, auth_url: str) -> AsyncIterator[Notifier]:
    app = create_notifier_app(notifier_settings(infra, auth_url))
    async with serve_in_process(app) as url:
        yield Notifier(url, app)


@pytest.fixture(scope="session")
def topology(infra: Any) -> amqp.Topology:
    return amqp.Topology(infra.amqp_namespace)


@pytest.fixture(scope="session")
async def amqp_connection(
    infra: Any, topology: amqp.Topology
) -> AsyncIterator[AbstractRobustConnection]:
    async with amqp.open_connection(infra.amqp_url, "notifier-tests") as connection:
        channel = await connection.channel()
        await amqp.declare_topology(channel, topology)
        await channel.close()
        yield connection


@pytest.fixture
async def relay(
    db_pool: asyncpg.Pool, amqp_connection: AbstractRobustConnection
) -> AsyncIterator[Relay]:
    running = Relay(db_pool, amqp_connection)
    running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def alice(auth_url: str) -> User:
    return await sign_up(auth_url)


@pytest.fixture
async def bob(auth_url: str) -> User:
    return await sign_up(auth_url)


@pytest.fixture
def task_store(db_pool: asyncpg.Pool, topology: amqp.Topology) -> Tasks:
    return Tasks(db_pool, topology)
