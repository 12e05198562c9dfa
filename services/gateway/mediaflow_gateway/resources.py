"""What the gateway runs on, opened for the app's life: the database and the broker, S3,
the session client, the task submitter, and the outbox relay and revocation listener
working beside the routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from aio_pika.abc import AbstractRobustConnection

from mediaflow_gateway.settings import GatewaySettings
from mediaflow_gateway.submissions import Submitter
from mediaflow_libs import s3
from mediaflow_libs.amqp import Topology
from mediaflow_libs.app_builder import open_database_and_broker, running_in_background
from mediaflow_libs.outbox import OutboxRelay
from mediaflow_libs.revocations import listen_for_revocations
from mediaflow_libs.session_client import SessionClient

SUBMIT_WINDOW_SECONDS = 60  # TASK_SUBMITS_PER_MINUTE counts submissions per this window


@dataclass
class Resources:
    settings: GatewaySettings
    topology: Topology
    pool: asyncpg.Pool
    amqp: AbstractRobustConnection
    sessions: SessionClient
    submitter: Submitter
    s3: Any  # aiobotocore S3 client for S3_ENDPOINT_URL
    s3_public: Any  # aiobotocore S3 client signing for S3_PUBLIC_ENDPOINT_URL


@asynccontextmanager
async def open_resources(settings: GatewaySettings) -> AsyncIterator[Resources]:
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
            window_seconds=SUBMIT_WINDOW_SECONDS,
        )
        stack.push_async_callback(submitter.aclose)
        relay = OutboxRelay(pool, connection, poll_interval=settings.outbox_poll_interval_seconds)
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
