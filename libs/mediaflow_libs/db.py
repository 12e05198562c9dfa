"""asyncpg pool lifespan."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

log = structlog.get_logger(__name__)

# A connection of its own or one lent by a pool: queries take either.
Connection = asyncpg.Connection | PoolConnectionProxy


async def _init_connection(con: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await con.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


@asynccontextmanager
async def open_pool(dsn: str, size: int = 10) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=size, init=_init_connection, command_timeout=30
    )
    log.info("db.pool.opened", size=size)
    try:
        yield pool
    finally:
        await pool.close()
        log.info("db.pool.closed")
