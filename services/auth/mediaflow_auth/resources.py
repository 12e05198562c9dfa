"""What auth runs on: its database, and the broker it announces revocations on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import asyncpg
import structlog
from aio_pika.abc import AbstractRobustConnection

from mediaflow_auth.settings import AuthSettings
from mediaflow_libs.amqp import Topology
from mediaflow_libs.app_builder import open_database_and_broker
from mediaflow_libs.contracts import CredentialRevoked
from mediaflow_libs.revocations import announce_revocation

log = structlog.get_logger(__name__)


@dataclass
class Resources:
    settings: AuthSettings
    pool: asyncpg.Pool
    amqp: AbstractRobustConnection
    topology: Topology

    async def announce(self, revoked: CredentialRevoked) -> None:
        # Caches expire on their own within AUTH_CACHE_SECONDS; the announcement makes it
        # immediate, so a failed one is logged rather than failing the sign-out.
        try:
            await announce_revocation(self.amqp, self.topology, revoked)
        except Exception as exc:
            log.warning("auth.revocation_not_announced", error=repr(exc))


@asynccontextmanager
async def open_resources(settings: AuthSettings) -> AsyncIterator[Resources]:
    async with AsyncExitStack() as stack:
        pool, connection, topology = await open_database_and_broker(stack, settings, "auth")
        yield Resources(settings=settings, pool=pool, amqp=connection, topology=topology)
