"""Fixtures of the hostile-input suite.

``world`` is the session's ``running_stack`` (the default configuration: the worker may
fetch from 127.0.0.1 only). ``hostile`` is a second stack on the same database and bucket
with short fetch limits, so that slow and lying sources fail in seconds, and with
``EGRESS_ALLOW_CIDRS=127.0.0.2/32``: its origin lives on 127.0.0.2, and 127.0.0.1 (where
``localhost`` and the other names of /etc/hosts point) becomes a forbidden destination that
canaries watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from devstack import stack
from mediaflow_libs.amqp import Topology, delete_topology
from tests.hostile.sources import ALLOWED_HOST, MAX_MEDIA_BYTES, Canary, Origin
from tests.hostile.support import User, World, open_storage, sign_up

HOSTILE_ENV = {
    "LOG_LEVEL": "info",
    "EGRESS_ALLOW_CIDRS": f"{ALLOWED_HOST}/32",
    "MAX_MEDIA_BYTES": str(MAX_MEDIA_BYTES),
    "FETCH_CONNECT_TIMEOUT_SECONDS": "2",
    "FETCH_READ_TIMEOUT_SECONDS": "1",
    "FETCH_TOTAL_TIMEOUT_SECONDS": "60",
    "FETCH_MIN_RATE_BYTES_PER_SECOND": "4096",
    "FETCH_MIN_RATE_WINDOW_SECONDS": "1",
    "RETRY_MAX_ATTEMPTS": "2",
    "RETRY_BASE_DELAY_SECONDS": "0.25",
    "WORKER_PREFETCH": "16",
    "CACHE_ENABLED": "false",
}


class _Starter:
    """Brings a stack up on a thread, so that it starts while the default stack does."""

    def __init__(self, config: stack.StackConfig) -> None:
        self.config = config
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._up, name="hostile-stack", daemon=True)
        self._thread.start()

    def _up(self) -> None:
        try:
            stack.up(self.config, data_dir=stack.REPO_ROOT / ".data")
        except BaseException as exc:  # re-raised by wait()
            self._error = exc

    def wait(self) -> stack.StackConfig:
        self._thread.join(timeout=180)
        if self._thread.is_alive():
            raise TimeoutError("the hostile stack did not come up within 180 s")
        if self._error is not None:
            raise self._error
        return self.config


@pytest.fixture(scope="session", autouse=True)
def _hostile_stack_starter(
    request: pytest.FixtureRequest,
    infra,
    tmp_path_factory: pytest.TempPathFactory,  # type: ignore[no-untyped-def]
) -> Iterator[_Starter | None]:
    """Starts the hostile stack at the suite's first test when any collected test needs it."""
    if not any(
        "hostile_stack" in getattr(item, "fixturenames", ()) for item in request.session.items
    ):
        yield None
        return
    config = stack.StackConfig(
        run_dir=tmp_path_factory.mktemp("hostile-stack"),
        database=infra.database,
        amqp_namespace=f"{infra.amqp_namespace}-hostile",
        bucket=infra.bucket,
        ingress_port=stack.free_port(),
        ports={service: stack.free_port() for service in stack.SERVICES},
        extra_env=HOSTILE_ENV,
    )
    starter = _Starter(config)
    try:
        yield starter
    finally:
        with contextlib.suppress(Exception):
            starter.wait()
        stack.down(config.run_dir, include_seaweedfs=False)
        # The services' broker: the caller's AMQP_URL passes through to them (devstack).
        amqp_url = os.environ.get("AMQP_URL", infra.amqp_url)
        asyncio.run(delete_topology(amqp_url, Topology(config.amqp_namespace)))


@pytest.fixture(scope="session")
def hostile_stack(_hostile_stack_starter: _Starter | None) -> stack.StackConfig:
    assert _hostile_stack_starter is not None
    return _hostile_stack_starter.wait()


@pytest.fixture(scope="session")
async def storage(infra) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def]
    async with open_storage(infra.secrets) as client:
        yield client


@pytest.fixture(scope="session")
def world(running_stack: stack.StackConfig, db_pool: asyncpg.Pool, storage: Any) -> World:
    return World(running_stack, db_pool, storage)


@pytest.fixture(scope="session")
def hostile(hostile_stack: stack.StackConfig, db_pool: asyncpg.Pool, storage: Any) -> World:
    return World(hostile_stack, db_pool, storage)


@pytest.fixture(scope="session")
def hostile_origin() -> Iterator[Origin]:
    origin = Origin(ALLOWED_HOST)
    try:
        yield origin
    finally:
        origin.close()


@pytest.fixture(scope="session")
def canaries() -> Iterator[dict[str, Canary]]:
    """Servers on forbidden loopback addresses: 127.0.0.1 (``localhost``), 127.0.0.3, ::1."""
    servers = {host: Canary(host) for host in ("127.0.0.1", "127.0.0.3", "::1")}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.close()


@pytest.fixture
def no_canary_hit(canaries: dict[str, Canary]) -> Iterator[dict[str, Canary]]:
    """Fails the test when any canary was reached during it."""
    before = {host: len(c.hits) for host, c in canaries.items()}
    yield canaries
    reached = {
        host: c.hits[before[host] :] for host, c in canaries.items() if len(c.hits) > before[host]
    }
    assert not reached, f"the worker connected to forbidden addresses: {reached}"


@pytest.fixture
async def hostile_user(hostile: World) -> User:
    return await sign_up(hostile.url)
