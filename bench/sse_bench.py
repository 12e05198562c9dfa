"""Event streams under load: one notifier process next to a minimal Litestar SSE endpoint.

    uv run python bench/sse_bench.py [--idle-clients 10000] [--lag-clients 1000] [--rate 500]

Starts the auth service and one ``mediaflow-notifier`` process against a throwaway
database and AMQP namespace, and the baseline app ``bench/sse_minimal.py`` (both uvicorn
with uvloop and httptools). The load generator ``bench/sse_loadgen.py`` runs in a process
of its own, on loopback only. For each server, in turn:

- idle: open ``--idle-clients`` event streams, hold them past one heartbeat, and divide
  the growth of the server's RSS (over a warmed-up baseline) by the streams held;
- lag: open ``--lag-clients`` streams (one task each on the notifier) and deliver
  ``--rate`` events a second for ``--seconds`` seconds spread over them; the load
  generator times each event from the moment it was made to the moment it was read.
  Notifier events are published to its RabbitMQ exchange as the outbox relay does, so
  their lag includes the broker hop; the baseline makes its events in-process.

Prints a table with ratios and exits non-zero when the notifier misses a target (or
either server drops streams or events). ``AMQP_URL`` picks the broker, as for the
services. Logs stay under ``.run/``; database and queues are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import psutil
from google.protobuf.timestamp_pb2 import Timestamp
from results import Result, write_json

from mediaflow_libs.amqp import Topology, delete_topology
from mediaflow_libs.contracts import Task, TaskEvent
from mediaflow_libs.migrate import apply_migrations, create_database_if_missing

# Run as a plain script: the repository's top-level devstack package is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devstack import stack

BENCH_DIR = Path(__file__).resolve().parent
KIB = 1024
RSS_TARGET_KIB = 20.0
LAG_P99_TARGET_MS = 100.0
USERS = 20
# Enough to open every pool and cache once; few, so their freed memory flatters no one.
WARMUP_CLIENTS = 100
# Held past one heartbeat (15 s), so every stream has also written a ping.
HOLD_SECONDS = 17.0
STEP_TIMEOUT_SECONDS = 180.0
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


# --- the load generator process ---------------------------------------------------------


class LoadGenerator:
    """``bench/sse_loadgen.py`` in its own process, driven one command per line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, port: int, clients: Sequence[tuple[str, str]]
    ) -> AsyncIterator[LoadGenerator]:
        """The load generator with its streams described; they are closed on the way out."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(BENCH_DIR / "sse_loadgen.py"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        generator = cls(process)
        try:
            generator._send(json.dumps({"port": port, "clients": list(clients)}))
            yield generator
            generator._send("close")
            async with asyncio.timeout(STEP_TIMEOUT_SECONDS):
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    def _send(self, line: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(line.encode() + b"\n")

    async def ask(self, command: str) -> dict[str, Any]:
        self._send(command)
        assert self._process.stdout is not None
        async with asyncio.timeout(STEP_TIMEOUT_SECONDS):
            line = await self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the load generator exited during {command!r}")
        answer: dict[str, Any] = json.loads(line)
        return answer


# --- the two servers --------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    pid: int
    stream_path: str  # format with {i} (client number) and {task}

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    async def streams_open(self) -> int:
        async with httpx.AsyncClient(timeout=10) as client:
            if self.name == "notifier":
                text = (await client.get(f"http://127.0.0.1:{self.port}/metrics")).text
                match = re.search(r"^notifier_connected_clients (\S+)$", text, re.MULTILINE)
                return int(float(match.group(1))) if match else -1
            answer = await client.get(f"http://127.0.0.1:{self.port}/clients")
            return int(answer.json()["connected"])


@dataclass
class Users:
    cookies: list[str]  # one `mf_session=…` per user
    ids: list[str]

    def clients(self, server: Server, count: int) -> tuple[list[tuple[str, str]], list[str]]:
        """(path, cookie) of ``count`` streams spread over the users, and the task each
        watches (the notifier streams are narrowed to one task each)."""
        tasks = [str(uuid.uuid4()) for _ in range(count)]
        clients = [
            (server.stream_path.format(i=i, task=task), self.cookies[i % len(self.cookies)])
            for i, task in enumerate(tasks)
        ]
        return clients, tasks


async def sign_up(auth_url: str, count: int) -> Users:
    cookies, ids = [], []
    async with httpx.AsyncClient(base_url=auth_url, timeout=30) as client:
        for _ in range(count):
            response = await client.post(
                "/v1/auth/sign-up",
                json={
                    "email": f"bench-{secrets.token_hex(6)}@example.com",
                    "password": "a long passphrase",
                },
            )
            response.raise_for_status()
            cookies.append(f"mf_session={response.cookies['mf_session']}")
            ids.append(response.json()["user"]["id"])
            client.cookies.clear()
    return Users(cookies, ids)


# --- the measurements -------------------------------------------------------------------


@dataclass
class IdleResult:
    connected: int
    failed: int
    server_count: int
    connect_seconds: float
    rss_before: int
    rss_after: int

    @property
    def kib_per_stream(self) -> float:
        return (self.rss_after - self.rss_before) / max(1, self.connected) / KIB


async def measure_idle(server: Server, users: Users, count: int) -> IdleResult:
    # Warm up first (code paths, pools, caches), so the baseline holds what every stream shares.
    warmup, _ = users.clients(server, WARMUP_CLIENTS)
    async with LoadGenerator.running(server.port, warmup) as generator:
        await generator.ask("connect")
    await asyncio.sleep(2)
    rss_before = server.rss()
    clients, _ = users.clients(server, count)
    async with LoadGenerator.running(server.port, clients) as generator:
        opened = await generator.ask("connect")
        await asyncio.sleep(HOLD_SECONDS)
        rss_after = server.rss()
        server_count = await server.streams_open()
    return IdleResult(
        opened["connected"],
        opened["failed"],
        server_count,
        opened["seconds"],
        rss_before,
        rss_after,
    )


@dataclass
class LagResult:
    connected: int
    sent: int
    received: int
    p50_ms: float
    p99_ms: float
    max_ms: float


class NotifierEvents:
    """Publishes task events to the notifier's exchange, as the outbox relay does."""

    def __init__(self, amqp_url: str, topology: Topology) -> None:
        self._amqp_url = amqp_url
        self._topology = topology

    async def publish(self, users: Users, tasks: list[str], rate: int, seconds: float) -> int:
        total = int(rate * seconds)
        connection = await aio_pika.connect(self._amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=False)
            exchange = await channel.get_exchange(self._topology.events_exchange)
            started = time.monotonic()
            for number in range(total):
                delay = started + number / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                index = number % len(tasks)
                user_id = users.ids[index % len(users.ids)]
                now = Timestamp()
                now.GetCurrentTime()
                event = TaskEvent(
                    event_id=number + 1,
                    task=Task(
                        id=tasks[index],
                        user_id=user_id,
                        status="running",
                        progress=number * 100 // total,
                        source_url="https://media.example/clip.mp4",
                        attempt=1,
                        created_at=now,
                        updated_at=now,
                    ),
                )
                await exchange.publish(
                    aio_pika.Message(event.SerializeToString()),
                    routing_key=self._topology.event_routing_key(user_id, tasks[index]),
                )
        return total


async def measure_lag(
    server: Server, users: Users, count: int, rate: int, seconds: float, events: NotifierEvents
) -> LagResult:
    clients, tasks = users.clients(server, count)
    async with LoadGenerator.running(server.port, clients) as generator:
        opened = await generator.ask("connect")
        collecting = asyncio.create_task(generator.ask(f"collect {seconds + 3}"))
        await asyncio.sleep(0.5)  # the load generator is counting before the first event
        if server.name == "notifier":
            sent = await events.publish(users, tasks, rate, seconds)
        else:
            async with httpx.AsyncClient() as client:
                answer = await client.post(
                    f"http://127.0.0.1:{server.port}/burst",
                    params={"rate": rate, "seconds": seconds},
                )
                sent = int(answer.json()["events"])
        collected = await collecting
    lag = collected["lag_ms"] or {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return LagResult(
        opened["connected"], sent, collected["received"], lag["p50"], lag["p99"], lag["max"]
    )


async def server_lag_p99_bound(server: Server) -> str:
    """The notifier's own histogram (change → written to the socket): the bucket bound
    under which 99 % of its live deliveries fell."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"http://127.0.0.1:{server.port}/metrics")).text
    buckets = [
        (float(bound), float(value))
        for bound, value in re.findall(
            r'^notifier_delivery_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.MULTILINE
        )
    ]
    total = buckets[-1][1] if buckets else 0
    for bound, value in buckets:
        if total and value >= 0.99 * total:
            return f"≤ {bound * 1000:g}"
    return "n/a"


# --- setup and teardown -----------------------------------------------------------------


def start_minimal(run_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = stack.free_port()
    log = (run_dir / "logs" / "sse_minimal.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / "sse_minimal.py"), str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack.wait_until(lambda: stack.port_open(port), "the minimal SSE app", timeout=30)
    return process, port


async def cleanup(database: str, amqp_url: str, topology: Topology) -> None:
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await admin.close()
    await delete_topology(amqp_url, topology)


# --- the report -------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def ratio(notifier: float, minimal: float) -> str:
    return f"{notifier / minimal:.2f}" if minimal else "n/a"


def print_table(rows: list[tuple[str, str, str, str, str]]) -> None:
    header = ("", "notifier", "minimal Litestar", "notifier / minimal", "target (notifier)")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * width for width in widths), *rows]:
        print(
            "| "
            + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            + " |"
        )


# --- the run ----------------------------------------------------------------------------


async def run(
    args: argparse.Namespace, servers: list[Server], users: Users, events: NotifierEvents
) -> int:
    idle = {s.name: await measure_idle(s, users, args.idle_clients) for s in servers}
    lag = {
        s.name: await measure_lag(s, users, args.lag_clients, args.rate, args.seconds, events)
        for s in servers
    }
    notifier_histogram = await server_lag_p99_bound(servers[0])
    n_idle, m_idle, n_lag, m_lag = (
        idle["notifier"],
        idle["minimal"],
        lag["notifier"],
        lag["minimal"],
    )

    held_ok = all(
        r.connected == args.idle_clients and r.server_count == args.idle_clients
        for r in idle.values()
    )
    rss_ok = n_idle.kib_per_stream <= RSS_TARGET_KIB
    delivered_ok = all(
        r.connected == args.lag_clients and r.received == r.sent for r in lag.values()
    )
    lag_ok = n_lag.p99_ms <= LAG_P99_TARGET_MS

    print(
        f"\nSSE, one server process each (uvicorn, uvloop, httptools), load generator in its "
        f"own process, loopback; {len(users.ids)} users\n"
    )
    print_table(
        [
            (
                "idle streams held (client / server count)",
                f"{n_idle.connected} / {n_idle.server_count}",
                f"{m_idle.connected} / {m_idle.server_count}",
                "",
                f"{args.idle_clients} {verdict(held_ok)}",
            ),
            (
                "time to open them",
                f"{n_idle.connect_seconds:.1f} s",
                f"{m_idle.connect_seconds:.1f} s",
                ratio(n_idle.connect_seconds, m_idle.connect_seconds),
                "",
            ),
            (
                "RSS before → after",
                f"{n_idle.rss_before / KIB**2:.1f} → {n_idle.rss_after / KIB**2:.1f} MiB",
                f"{m_idle.rss_before / KIB**2:.1f} → {m_idle.rss_after / KIB**2:.1f} MiB",
                "",
                "",
            ),
            (
                "RSS per idle stream",
                f"{n_idle.kib_per_stream:.1f} KiB",
                f"{m_idle.kib_per_stream:.1f} KiB",
                ratio(n_idle.kib_per_stream, m_idle.kib_per_stream),
                f"≤ {RSS_TARGET_KIB:g} KiB {verdict(rss_ok)}",
            ),
            (
                f"streams for the lag run ({args.rate} events/s, {args.seconds:g} s)",
                str(n_lag.connected),
                str(m_lag.connected),
                "",
                str(args.lag_clients),
            ),
            (
                "events received / sent",
                f"{n_lag.received} / {n_lag.sent}",
                f"{m_lag.received} / {m_lag.sent}",
                "",
                f"all {verdict(delivered_ok)}",
            ),
            (
                "delivery lag p50",
                f"{n_lag.p50_ms:.1f} ms",
                f"{m_lag.p50_ms:.1f} ms",
                ratio(n_lag.p50_ms, m_lag.p50_ms),
                "",
            ),
            (
                "delivery lag p99",
                f"{n_lag.p99_ms:.1f} ms",
                f"{m_lag.p99_ms:.1f} ms",
                ratio(n_lag.p99_ms, m_lag.p99_ms),
                f"≤ {LAG_P99_TARGET_MS:g} ms {verdict(lag_ok)}",
            ),
            (
                "delivery lag max",
                f"{n_lag.max_ms:.1f} ms",
                f"{m_lag.max_ms:.1f} ms",
                ratio(n_lag.max_ms, m_lag.max_ms),
                "",
            ),
            ("notifier's own lag histogram, p99 bucket", f"{notifier_histogram} ms", "", "", ""),
        ]
    )
    write_json(
        args.json,
        "sse_bench",
        [
            Result(
                "notifier idle SSE clients held (one process)",
                f"{n_idle.connected} / {n_idle.server_count}",
                f"{m_idle.connected} / {m_idle.server_count} minimal Litestar",
                ratio(n_idle.connected, m_idle.connected),
                f"{args.idle_clients} held (client / server count)",
                held_ok,
            ),
            Result(
                "notifier RSS per idle SSE client",
                f"{n_idle.kib_per_stream:.1f} KiB",
                f"{m_idle.kib_per_stream:.1f} KiB minimal Litestar",
                ratio(n_idle.kib_per_stream, m_idle.kib_per_stream),
                f"<= {RSS_TARGET_KIB:g} KiB",
                rss_ok,
            ),
            Result(
                f"notifier delivery lag p99 ({args.lag_clients} streams, {args.rate} ev/s)",
                f"{n_lag.p99_ms:.1f} ms",
                f"{m_lag.p99_ms:.1f} ms minimal Litestar",
                ratio(n_lag.p99_ms, m_lag.p99_ms),
                f"<= {LAG_P99_TARGET_MS:g} ms, every event delivered",
                lag_ok and delivered_ok,
            ),
        ],
    )
    return 0 if held_ok and rss_ok and delivered_ok and lag_ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-clients", type=int, default=10_000)
    parser.add_argument("--lag-clients", type=int, default=1_000)
    parser.add_argument("--rate", type=int, default=500, help="events a second in the lag run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the lag run")
    parser.add_argument("--json", help="also write the results here (for bench/all.py)")
    args = parser.parse_args()
    # Children inherit the limit: 10,000 streams need 10,000 descriptors on each side.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    amqp_url = os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)
    stack.ensure_postgres()
    stack.ensure_rabbitmq()
    suffix = secrets.token_hex(4)
    config = stack.StackConfig(
        run_dir=stack.REPO_ROOT / ".run" / f"bench-sse-{suffix}",
        database=f"mediaflow_bench_{suffix}",
        amqp_namespace=f"bench-{suffix}",
        ports={"auth": stack.free_port(), "notifier": stack.free_port()},
        # 500 streams per user here (10,000 over 20 users), past the default limit.
        extra_env={"LOG_FORMAT": "json", "SSE_MAX_STREAMS_PER_USER": "100000"},
    )
    topology = Topology(config.amqp_namespace)
    (config.run_dir / "logs").mkdir(parents=True, exist_ok=True)
    minimal: subprocess.Popen[bytes] | None = None
    try:
        asyncio.run(create_database_if_missing(config.database_url))
        asyncio.run(apply_migrations(config.database_url))
        for service in ("auth", "notifier"):
            stack.wait_healthy(config, service, stack.start_service(config, service))
        minimal, minimal_port = start_minimal(config.run_dir)
        notifier_pid = int((config.run_dir / "notifier.pid").read_text())
        servers = [
            Server("notifier", config.ports["notifier"], notifier_pid, "/v1/events?task={task}"),
            Server("minimal", minimal_port, minimal.pid, "/events?client={i}"),
        ]

        async def everything() -> int:
            users = await sign_up(config.service_url("auth"), USERS)
            return await run(args, servers, users, NotifierEvents(amqp_url, topology))

        return asyncio.run(everything())
    finally:
        if minimal is not None:
            minimal.terminate()
            minimal.wait()
        stack.down(config.run_dir, include_seaweedfs=False)
        asyncio.run(cleanup(config.database, amqp_url, topology))


if __name__ == "__main__":
    sys.exit(main())
