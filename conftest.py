"""Fixtures every test suite shares: a real PostgreSQL database, RabbitMQ names and an
S3 bucket of its own per test session, so runs never see each other's data."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn

from devstack import stack
from mediaflow_libs import db
from mediaflow_libs.amqp import Topology, delete_topology
from mediaflow_libs.migrate import apply_migrations, create_database_if_missing


@dataclass(frozen=True)
class Infra:
    database_url: str
    database: str
    amqp_url: str
    amqp_namespace: str
    bucket: str
    secrets: dict[str, str]

    def settings_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for any service's settings class."""
        return {
            "database_url": self.database_url,
            "amqp_url": self.amqp_url,
            "amqp_namespace": self.amqp_namespace,
            "s3_bucket": self.bucket,
            "s3_endpoint_url": f"http://127.0.0.1:{stack.S3_PORT}",
            "service_secret": self.secrets["SERVICE_SECRET"],
            "s3_access_key_id": self.secrets["S3_ACCESS_KEY_ID"],
            "s3_secret_access_key": self.secrets["S3_SECRET_ACCESS_KEY"],
            "egress_allow_cidrs": "127.0.0.1/32",
            "log_format": "console",
        } | overrides


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    stack.ensure_postgres()
    stack.ensure_rabbitmq()
    # Stopped at the end when this session started it (one `make run` started stays up).
    started_seaweedfs = stack.ensure_seaweedfs(
        stack.REPO_ROOT / ".data" / "seaweedfs",
        stack.REPO_ROOT / ".run" / "logs",
        stack.local_secrets(),
    )
    suffix = secrets.token_hex(4)
    name = f"mediaflow_test_{suffix}"
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    asyncio.run(_create(url))
    amqp_url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    namespace = f"test-{suffix}"
    yield Infra(
        database_url=url,
        database=name,
        amqp_url=amqp_url,
        amqp_namespace=namespace,
        bucket=f"test-{suffix}",
        secrets=stack.local_secrets(),
    )
    asyncio.run(_drop(name))
    asyncio.run(delete_topology(amqp_url, Topology(namespace)))
    if started_seaweedfs:
        stack.stop_seaweedfs()


async def _create(url: str) -> None:
    await create_database_if_missing(url)
    await apply_migrations(url)


async def _drop(name: str) -> None:
    con = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await con.close()


@pytest.fixture(scope="session")
async def db_pool(infra: Infra) -> AsyncIterator[asyncpg.Pool]:
    async with db.open_pool(infra.database_url, size=5) as pool:
        yield pool


@pytest.fixture
def artifacts_dir() -> Path:
    path = stack.REPO_ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@asynccontextmanager
async def serving(app: Any, port: int | None = None, **options: Any) -> AsyncIterator[str]:
    """Run an ASGI app under uvicorn on a loopback port (a free one by default); yields its
    base URL. ``options`` go to ``uvicorn.Config``."""
    port = port or stack.free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on", **options)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="session")
async def auth_url(infra: Infra) -> AsyncIterator[str]:
    """The real auth service, served over HTTP for the services that call it."""
    from mediaflow_auth.app import create_app
    from mediaflow_auth.settings import AuthSettings

    async with serving(create_app(AuthSettings(**infra.settings_kwargs()))) as url:
        yield url
