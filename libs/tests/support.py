"""What several of the libraries' tests use."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from mediaflow_libs.migrate import create_database_if_missing


@asynccontextmanager
async def private_database(infra, purpose: str) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """The URL of a new empty database of the test's own, dropped afterwards."""
    name = f"{infra.database}_{purpose}_{secrets.token_hex(3)}"
    url = infra.database_url.rsplit("/", 1)[0] + f"/{name}"
    await create_database_if_missing(url)
    try:
        yield url
    finally:
        admin = await asyncpg.connect(infra.database_url.rsplit("/", 1)[0] + "/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
