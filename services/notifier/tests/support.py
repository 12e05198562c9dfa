"""Helpers of the notifier tests: serving apps with uvicorn in-process, producing task
events the way the other services do, and reading event streams."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import uvicorn
from aio_pika.abc import AbstractRobustConnection
from litestar import Litestar

from mediaflow_libs import amqp, task_transitions
from mediaflow_libs.outbox import OutboxRelay
from mediaflow_notifier.resources import Resources, resources_of
from mediaflow_notifier.settings import NotifierSettings

WAIT_SECONDS = 10.0  # upper bound of every wait for something that should happen


class _InProcessServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The test process keeps its own signal handlers.
        yield


@contextlib.asynccontextmanager
async def serve_in_process(app: Litestar) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free port of this event loop; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _InProcessServer(
        uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=5)
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            while not server.started:
                if serving.done():
                    raise RuntimeError("the app did not start")
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving
        sock.close()


def free_port() -> int:
    """A port nothing listens on (the socket is closed again at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Notifier:
    url: str
    app: Litestar

    @property
    def resources(self) -> Resources:
        return resources_of(self.app.state)


def notifier_settings(infra: Any, auth_url: str, **overrides: Any) -> NotifierSettings:
    return NotifierSettings(
        **infra.settings_kwargs(auth_internal_url=auth_url, sse_heartbeat_seconds=1, **overrides)
    )


class Relay:
    """The outbox relay the worker runs, which tests can pause to hold events back."""

    def __init__(self, pool: asyncpg.Pool, connection: AbstractRobustConnection) -> None:
        self._relay = OutboxRelay(pool, connection, poll_interval=0.2)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._relay.run(), name="test-outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


@dataclass
class User:
    id: str
    token: str


async def sign_up(auth_url: str) -> User:
    async with httpx.AsyncClient(base_url=auth_url) as client:
        response = await client.post(
            "/v1/auth/sign-up",
            json={
                "email": f"u-{uuid.uuid4().hex}@example.com",
                "password": "correct horse battery",
            },
        )
    assert response.status_code == 201, response.text
    return User(id=response.json()["user"]["id"], token=response.cookies["mf_session"])


@dataclass
class Tasks:
    """Changes tasks the way gateway and worker do: row, event and outbox in one transaction."""

    pool: asyncpg.Pool
    topology: amqp.Topology

    async def create(self, user: User) -> str:
        async with self.pool.acquire() as con, con.transaction():
            row = await con.fetchrow(
                """INSERT INTO media.tasks (user_id, source_url, cost)
                   VALUES ($1, 'https://media.example/clip.mp4', 1) RETURNING *""",
                user.id,
            )
            assert row is not None
            await task_transitions.record_event(con, self.topology, row)
        return str(row["id"])

    async def move(self, task_id: str, target: str, **changes: Any) -> int:
        """Apply a transition; returns the id of the event it recorded."""
        async with self.pool.acquire() as con, con.transaction():
            row = await task_transitions.transition(con, self.topology, task_id, target, **changes)
            assert row is not None, f"{task_id} may not move to {target}"
            event_id: int = await con.fetchval(
                "SELECT max(id) FROM media.task_events WHERE task_id = $1", task_id
            )
        return event_id

    async def published(self, user: User) -> None:
        """Wait until the relay has published every event of ``user``."""
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                async with self.pool.acquire() as con:
                    waiting = await con.fetchval(
                        "SELECT count(*) FROM media.outbox WHERE routing_key LIKE $1",
                        f"user.{user.id}.%",
                    )
                if waiting == 0:
                    return
                await asyncio.sleep(0.05)

    async def latest_event_id(self, task_id: str) -> int:
        async with self.pool.acquire() as con:
            event_id: int = await con.fetchval(
                "SELECT max(id) FROM media.task_events WHERE task_id = $1", task_id
            )
        return event_id


@dataclass
class Block:
    """One SSE block: the lines up to a blank line."""

    fields: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def id(self) -> int:
        return int(self.fields["id"])

    @property
    def task(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.fields["data"])
        return value


class EventReader:
    """Reads a ``text/event-stream`` body block by block, every read bounded in time."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def block(self, within: float = WAIT_SECONDS) -> Block:
        block = Block()
        async with asyncio.timeout(within):
            async for line in self._lines:
                if line == "":
                    if block.fields or block.comments:
                        return block
                    continue
                if line.startswith(":"):
                    block.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                block.fields[name] = value.removeprefix(" ")
        raise EOFError("the stream ended")

    async def event(self, within: float = WAIT_SECONDS) -> Block:
        """The next ``task`` event, skipping pings."""
        async with asyncio.timeout(within):
            while True:
                block = await self.block(within)
                if "data" in block.fields:
                    assert block.fields.get("event") == "task", block
                    return block

    async def events(self, count: int, within: float = WAIT_SECONDS) -> list[Block]:
        return [await self.event(within) for _ in range(count)]

    async def ended(self, within: float = WAIT_SECONDS) -> bool:
        """Whether the stream ends (cleanly) within ``within`` seconds, pings aside."""
        try:
            async with asyncio.timeout(within):
                while True:
                    block = await self.block(within)
                    assert "data" not in block.fields, f"unexpected event {block}"
        except EOFError:
            return True


@contextlib.asynccontextmanager
async def open_stream(
    base_url: str,
    user: User | None,
    params: list[tuple[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[EventReader]:
    """Open ``GET /v1/events`` and read past its ``retry`` line."""
    request_headers = dict(headers or {})
    if user is not None:
        request_headers["Cookie"] = f"mf_session={user.token}"
    # Pings arrive every second, so a read idle for this long is a failure too.
    timeout = httpx.Timeout(WAIT_SECONDS)
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=timeout) as client,
        client.stream("GET", "/v1/events", params=params, headers=request_headers) as response,
    ):
        if response.status_code != 200:
            await response.aread()
            raise AssertionError(f"{response.status_code}: {response.text}")
        reader = EventReader(response)
        first = await reader.block()
        assert first.fields == {"retry": "3000"}, first
        yield reader


async def wait_for(condition: Any, what: str, within: float = WAIT_SECONDS) -> None:
    """Poll ``condition()`` until it is true; fail after ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None
