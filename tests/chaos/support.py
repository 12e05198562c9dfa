"""Helpers of the chaos tests: the stack and its processes, users and load through the
ingress, database look-ups that outlive a database restart, where a scenario's tasks
ended up, event-stream clients that resume like a browser, and the one line of counts
each test prints."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from devstack import stack
from mediaflow_libs.s3 import open_s3
from mediaflow_libs.settings import S3Settings
from services.notifier.tests.support import EventReader
from tests.chaos.servers import PrivatePostgres, PrivateRabbitMQ

TERMINAL = frozenset({"succeeded", "failed", "canceled"})
# A job lease short enough that a SIGKILLed worker's tasks pass on within seconds.
LEASE_SECONDS = 6


def scale() -> float:
    """How much bigger and longer ``make chaos`` runs than ``make test`` (CHAOS_SCALE)."""
    return max(float(os.environ.get("CHAOS_SCALE", "1")), 0.1)


def scaled(count: float) -> int:
    return max(1, round(count * scale()))


# Every scenario's counts line, shown again in the run's summary (``conftest.py``), so a
# plain ``make test`` prints them too, not only ``pytest -s``.
REPORTS: list[str] = []


def report(
    scenario: str, counts: Tally, *, false_401s: int, missed_events: int, **extra: object
) -> None:
    """The test's counts on one line: the six every scenario is held to, then its own."""
    line_counts = {
        "tasks": len(counts.task_ids),
        "lost": counts.lost,
        "double_charged": counts.money.double_charged,
        "duplicates": counts.duplicates,
        "false_401s": false_401s,
        "missed_events": missed_events,
        **extra,
    }
    line = f"CHAOS {scenario}: " + " ".join(f"{k}={v}" for k, v in line_counts.items())
    REPORTS.append(line)
    print(f"\n{line}")


# --- the stack ------------------------------------------------------------------------


@dataclass
class ChaosStack:
    config: stack.StackConfig
    worker_b: stack.StackConfig  # the second worker process
    postgres: PrivatePostgres
    rabbitmq: PrivateRabbitMQ
    signup_credits: int

    @property
    def database_url(self) -> str:
        return self.config.database_url

    @property
    def public_url(self) -> str:
        return self.config.public_url

    @property
    def processes(self) -> list[tuple[stack.StackConfig, str]]:
        return [(self.config, service) for service in stack.SERVICES] + [(self.worker_b, "worker")]

    async def ready(self, config: stack.StackConfig, service: str) -> bool:
        try:
            async with httpx.AsyncClient(timeout=3) as client:
                response = await client.get(f"{config.service_url(service)}/readyz")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def wait_all_ready(self, within: float) -> dict[str, float]:
        """Wait until every process answers ``/readyz``; seconds each took."""
        started = time.monotonic()
        took: dict[str, float] = {}
        pending = {f"{c.run_dir.name}/{s}": (c, s) for c, s in self.processes}
        while pending:
            for name, (config, service) in list(pending.items()):
                if await self.ready(config, service):
                    took[name] = round(time.monotonic() - started, 2)
                    del pending[name]
            if pending:
                if time.monotonic() - started > within:
                    raise AssertionError(f"not ready after {within:.0f}s: {sorted(pending)}")
                await asyncio.sleep(0.1)
        return took

    async def kill(self, config: stack.StackConfig, service: str) -> None:
        """SIGKILL, as when a node dies."""
        await asyncio.to_thread(stack.kill_service, config, service)

    async def terminate(self, config: stack.StackConfig, service: str) -> None:
        """SIGTERM and wait for the process to end (a graceful stop)."""
        await asyncio.to_thread(stack.stop_pid_file, config.run_dir / f"{service}.pid")

    async def start(self, config: stack.StackConfig, service: str) -> None:
        """Start the process and wait until it is ready."""
        await asyncio.to_thread(stack.restart_service, config, service)


async def delete_bucket(bucket: str) -> None:
    async with _s3() as s3:
        with contextlib.suppress(Exception):
            for key in await list_objects(bucket, ""):
                await s3.delete_object(Bucket=bucket, Key=key)
            uploads = await s3.list_multipart_uploads(Bucket=bucket)
            for upload in uploads.get("Uploads", []):
                await s3.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
            await s3.delete_bucket(Bucket=bucket)


def _s3() -> Any:
    creds = stack.local_secrets()
    return open_s3(
        S3Settings(
            s3_endpoint_url=f"http://127.0.0.1:{stack.S3_PORT}",
            s3_access_key_id=creds["S3_ACCESS_KEY_ID"],
            s3_secret_access_key=creds["S3_SECRET_ACCESS_KEY"],
        )
    )


async def object_sha256(bucket: str, key: str) -> str:
    """The SHA-256 of a stored object, read back."""
    digest = hashlib.sha256()
    async with _s3() as s3:
        stored = await s3.get_object(Bucket=bucket, Key=key)
        async with stored["Body"] as body:
            while chunk := await body.read(1024 * 1024):
                digest.update(chunk)
    return digest.hexdigest()


async def open_uploads(bucket: str, prefix: str) -> list[str]:
    """The keys of the multipart uploads in progress under ``prefix``."""
    keys: list[str] = []
    async with _s3() as s3:
        paginator = s3.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Uploads", []))
    return keys


async def list_objects(bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    async with _s3() as s3:
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


# --- the database, across its restarts -------------------------------------------------


async def fetch(url: str, sql: str, *args: object, within: float = 60) -> list[asyncpg.Record]:
    """Run one query on a fresh connection, trying again while the server is away."""
    deadline = time.monotonic() + within
    while True:
        try:
            con = await asyncpg.connect(url, timeout=5)
            try:
                return await con.fetch(sql, *args)
            finally:
                await con.close()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def statuses(url: str, task_ids: Sequence[str]) -> dict[str, str]:
    rows = await fetch(
        url, "SELECT id::text, status FROM media.tasks WHERE id = ANY($1::uuid[])", list(task_ids)
    )
    return {row["id"]: row["status"] for row in rows}


async def wait_terminal(url: str, task_ids: Sequence[str], within: float) -> dict[str, str]:
    """Statuses once every task has ended, or as they are at the deadline."""
    deadline = time.monotonic() + within
    while True:
        found = await statuses(url, task_ids)
        done = len(found) == len(task_ids) and all(s in TERMINAL for s in found.values())
        if done or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


@dataclass(frozen=True)
class Ledger:
    double_charged: int  # tasks charged more than once
    uncharged: int  # tasks never charged
    double_refunded: int
    refunded: int
    refunds_of_succeeded: int
    balance: int  # the users' balances, summed
    granted: int  # their sign-up grants, summed
    cost: int  # what one task costs


async def ledger(url: str, user_ids: Sequence[str], task_ids: Sequence[str]) -> Ledger:
    rows = await fetch(
        url,
        """SELECT t.id::text, t.status, t.cost,
                  count(*) FILTER (WHERE l.reason = 'charge') AS charges,
                  count(*) FILTER (WHERE l.reason = 'refund') AS refunds
           FROM media.tasks t LEFT JOIN media.credit_ledger l ON l.task_id = t.id
           WHERE t.id = ANY($1::uuid[]) GROUP BY t.id""",
        list(task_ids),
    )
    accounts = await fetch(
        url,
        """SELECT coalesce(sum(a.balance), 0) AS balance,
                  coalesce(sum(l.delta), 0) AS granted
           FROM media.credit_accounts a
           JOIN media.credit_ledger l ON l.user_id = a.user_id AND l.reason = 'signup'
           WHERE a.user_id = ANY($1::uuid[])""",
        list(user_ids),
    )
    costs = {row["cost"] for row in rows}
    assert len(costs) <= 1, f"tasks of differing cost: {costs}"
    return Ledger(
        double_charged=sum(row["charges"] > 1 for row in rows),
        uncharged=sum(row["charges"] == 0 for row in rows) + len(task_ids) - len(rows),
        double_refunded=sum(row["refunds"] > 1 for row in rows),
        refunded=sum(row["refunds"] for row in rows),
        refunds_of_succeeded=sum(
            row["refunds"] > 0 and row["status"] == "succeeded" for row in rows
        ),
        balance=int(accounts[0]["balance"]),
        granted=int(accounts[0]["granted"]),
        cost=costs.pop() if costs else 0,
    )


@dataclass(frozen=True)
class Tally:
    """Where a scenario's tasks ended up: statuses, credit ledger, stored objects."""

    task_ids: list[str]
    final: dict[str, str]  # status by task id, once all ended (or at the deadline)
    money: Ledger
    objects: collections.Counter[str]  # stored objects by task id

    @property
    def by_status(self) -> collections.Counter[str]:
        return collections.Counter(self.final.values())

    @property
    def unfinished(self) -> dict[str, str | None]:
        """The tasks that never ended, with their last status (None: not stored)."""
        return {t: self.final.get(t) for t in self.task_ids if self.final.get(t) not in TERMINAL}

    @property
    def lost(self) -> int:
        return len(self.unfinished)

    @property
    def succeeded(self) -> list[str]:
        return [t for t, status in self.final.items() if status == "succeeded"]

    @property
    def duplicates(self) -> int:
        """Succeeded tasks stored more than once."""
        return sum(self.objects[t] > 1 for t in self.succeeded)

    @property
    def missing_objects(self) -> int:
        return sum(self.objects[t] == 0 for t in self.succeeded)

    @property
    def orphan_objects(self) -> int:
        return sum(n for t, n in self.objects.items() if self.final.get(t) != "succeeded")


async def tally(
    chaos: ChaosStack, user_ids: Sequence[str], task_ids: Sequence[str], within: float
) -> Tally:
    """Wait (up to ``within``) until every task ended, then count. ``user_ids`` are the
    scenario's own users: every stored object of theirs is one of its tasks'."""
    final = await wait_terminal(chaos.database_url, task_ids, within)
    money = await ledger(chaos.database_url, user_ids, task_ids)
    objects: collections.Counter[str] = collections.Counter()
    for user_id in user_ids:
        # Keys are tasks/<user>/<task>/<attempt>.
        for key in await list_objects(chaos.config.bucket, f"tasks/{user_id}/"):
            objects[key.split("/")[2]] += 1
    return Tally(list(task_ids), final, money, objects)


# --- users and load through the ingress --------------------------------------------------


@dataclass(frozen=True)
class User:
    id: str
    cookie: str

    @property
    def headers(self) -> dict[str, str]:
        return {"cookie": f"mf_session={self.cookie}"}


async def sign_up(base_url: str, count: int) -> list[User]:
    users = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for _ in range(count):
            response = await client.post(
                "/v1/auth/sign-up",
                json={
                    "email": f"chaos-{secrets.token_hex(6)}@example.com",
                    "password": "a long passphrase",
                },
            )
            assert response.status_code == 201, response.text
            users.append(User(response.json()["user"]["id"], response.cookies["mf_session"]))
            client.cookies.clear()
    return users


async def submit(client: httpx.AsyncClient, user: User, url: str) -> httpx.Response:
    return await client.post("/v1/tasks", json={"url": url}, headers=user.headers)


@dataclass
class Outcome:
    """One request of a load generator: which service answered what, and when."""

    service: str
    started: float
    ended: float
    status: int  # 0: no HTTP answer at all
    code: str | None


def problem_code(response: httpx.Response) -> str | None:
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        with contextlib.suppress(ValueError):
            code = response.json().get("code")
            return code if isinstance(code, str) else None
    return None


async def timed(
    service: str, request: Awaitable[httpx.Response], into: list[Outcome]
) -> httpx.Response | None:
    started = time.monotonic()
    try:
        response = await request
    except httpx.HTTPError:
        into.append(Outcome(service, started, time.monotonic(), 0, None))
        return None
    into.append(
        Outcome(service, started, time.monotonic(), response.status_code, problem_code(response))
    )
    return response


# --- event streams ----------------------------------------------------------------------


@dataclass
class Watcher:
    """A browser's event stream: connects to ``/v1/events`` through the ingress, and on any
    end or error comes back with ``Last-Event-ID`` (as ``EventSource`` does) until
    cancelled. Records every task event it receives."""

    base_url: str
    user: User
    seen: list[tuple[int, str, str]] = field(default_factory=list)  # (event id, task id, status)
    connects: int = 0
    # Attempts answered with something other than a stream, by HTTP status.
    refused: collections.Counter[int] = field(default_factory=collections.Counter)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    _drop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def last_id(self) -> int | None:
        return max((event_id for event_id, _, _ in self.seen), default=None)

    def drop(self) -> None:
        """Hang up the current stream (the watcher resumes at once)."""
        self._drop.set()

    def statuses_of(self, task_id: str) -> list[str]:
        return [status for _, task, status in self.seen if task == task_id]

    async def run(self) -> None:
        timeout = httpx.Timeout(10.0, read=15.0)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=timeout) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError, EOFError, TimeoutError):
                    await self._stream_once(client)
                await asyncio.sleep(0.2)

    async def _stream_once(self, client: httpx.AsyncClient) -> None:
        headers = dict(self.user.headers)
        # The cursor a browser sends: the id of the last event it got.
        last = self.seen[-1][0] if self.seen else None
        if last is not None:
            headers["Last-Event-ID"] = str(last)
        async with client.stream("GET", "/v1/events", headers=headers) as response:
            if response.status_code != 200:
                self.refused[response.status_code] += 1
                await response.aread()
                return
            self.connects += 1
            self.connected.set()
            self._drop.clear()
            reader = EventReader(response)
            while not self._drop.is_set():
                next_event = asyncio.ensure_future(reader.event(15.0))
                dropped = asyncio.ensure_future(self._drop.wait())
                try:
                    await asyncio.wait({next_event, dropped}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiting in (next_event, dropped):
                        waiting.cancel()
                    await asyncio.gather(next_event, dropped, return_exceptions=True)
                if next_event.cancelled():
                    return  # dropped
                block = next_event.result()
                self.seen.append((block.id, block.task["id"], block.task["status"]))


@contextlib.asynccontextmanager
async def watching(base_url: str, users: Sequence[User]) -> AsyncIterator[list[Watcher]]:
    """A watcher per user, each connected once before the block starts, running until it
    ends."""
    watchers = [Watcher(base_url, user) for user in users]
    streams = [asyncio.create_task(w.run()) for w in watchers]
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(w.connected.wait() for w in watchers))
        yield watchers
    finally:
        for task in streams:
            task.cancel()
        for task in streams:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def false_401s(statuses: Iterable[int], watchers: Iterable[Watcher] = ()) -> int:
    """The 401s among a scenario's answers and its watchers' refused connects. Every
    session in a scenario stays valid throughout, so each one is false."""
    return sum(status == 401 for status in statuses) + sum(w.refused[401] for w in watchers)


def _collapsed(values: Sequence[str]) -> list[str]:
    """Runs of one status become one (progress updates are not status changes)."""
    return [value for i, value in enumerate(values) if i == 0 or values[i - 1] != value]


def _common_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (the lists are a few items long)."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = (
                table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
            )
    return table[-1][-1]


@dataclass(frozen=True)
class StreamCheck:
    status_changes: int  # stored status changes of the watched tasks
    missed: int  # of those, how many the client never got
    out_of_order: int  # tasks whose events came in another order than stored
    unfinished: int  # tasks whose end the client never saw


async def check_streams(
    url: str, watchers: Sequence[Watcher], task_owner: Mapping[str, str], within: float = 30
) -> StreamCheck:
    """Compare what each watcher received with the status changes stored for its user's
    tasks (``task_owner``: user id by task id), once every watcher saw each of its tasks
    end or ``within`` passed. Call it once the tasks ended, with the watchers running."""
    deadline = time.monotonic() + within
    while True:
        check = await _check_streams_once(url, watchers, task_owner)
        if check.unfinished == 0 or time.monotonic() > deadline:
            return check
        await asyncio.sleep(0.3)


async def _check_streams_once(
    url: str, watchers: Sequence[Watcher], task_owner: Mapping[str, str]
) -> StreamCheck:
    changes = missed = disordered = unfinished = 0
    for watcher in watchers:
        rows = await fetch(
            url,
            """SELECT id, task_id::text, status FROM media.task_events
               WHERE user_id = $1 ORDER BY id""",
            watcher.user.id,
        )
        for task_id in (t for t, owner in task_owner.items() if owner == watcher.user.id):
            stored = _collapsed([row["status"] for row in rows if row["task_id"] == task_id])
            received = [(i, s) for i, t, s in watcher.seen if t == task_id]
            got = _collapsed([s for _, s in received])
            changes += len(stored)
            missed += len(stored) - _common_length(stored, got)
            ids = [i for i, _ in received]
            disordered += ids != sorted(ids)
            unfinished += not (got and got[-1] in TERMINAL)
    return StreamCheck(changes, missed, disordered, unfinished)
