"""Authenticated ``POST /v1/tasks`` through the real gateway next to a bare Litestar endpoint
doing one asyncpg INSERT, both measured in the same run.

    uv run python bench/gateway_submit.py [--connections 16] [--seconds 8] [--rounds 3]
                                          [--ratio R] [--json PATH]

Starts the auth service and one ``mediaflow-gateway`` process (its outbox relay publishing
jobs to RabbitMQ; no worker, so jobs just queue) against a throwaway database and AMQP
namespace, and the baseline ``bench/bare_insert.py`` (one process, the same uvicorn server
and pool size). One user signs up through auth; SQL gives it a large credit balance and
``TASK_SUBMITS_PER_MINUTE`` is raised so neither limit answers. The load generator is
``wrk`` (one thread, a Lua script for the cookie and body) in its own process, with the
same connections and duration against both servers.

Each round runs the bare endpoint, then the gateway, then waits until the gateway's outbox
is empty (so the relay's leftover work never runs during the next round's baseline). The
bench passes when every response was 2xx and every accepted task's job reached the jobs queue;
the median round's throughput ratio to the bare endpoint is reported next to the ceiling this
design can reach here (below), and is a target only when ``--ratio`` names one.

Beside each server's own CPU (and its PostgreSQL backends') per request, the table shows the
whole machine: the share of all cores busy during the round, and the CPU every process spent
per request (the gateway's until its outbox is empty: its relay's publishing, RabbitMQ's and
PostgreSQL's part of it). Where the machine is the limit, the throughput ratio follows the
inverse ratio of that last column.

After the rounds, the same number of callers submit through the gateway's ``Submitter`` in
this process, with an ``OutboxRelay`` beside them: a task's work without HTTP (the batched
database call, PostgreSQL, the relay, RabbitMQ). That machine CPU per task plus a bare
request's server CPU (standing in for the HTTP part) bounds what the ratio can reach here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import psutil
from results import Result, write_json

from mediaflow_gateway.settings import GatewaySettings
from mediaflow_gateway.submissions import Submitter
from mediaflow_libs import amqp, db
from mediaflow_libs.amqp import Topology, delete_topology
from mediaflow_libs.migrate import apply_migrations, create_database_if_missing
from mediaflow_libs.outbox import OutboxRelay

# Run as a plain script: the repository's top-level devstack package is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devstack import stack

BENCH_DIR = Path(__file__).resolve().parent
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
WARMUP_SECONDS = 2
DRAIN_TIMEOUT_SECONDS = 120.0
BODY = '{"url": "https://media.example/videos/clip.mp4"}'

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
local cookies = {%(cookies)s}
local n = 0
-- Each request carries the next user's cookie (the bare endpoint ignores it).
request = function()
  n = n + 1
  wrk.headers["Cookie"] = cookies[n %% #cookies + 1]
  return wrk.format()
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\n{"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, '
    .. '"socket_errors": %%d, "non_2xx": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    failed: int  # socket errors and non-2xx answers

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


def wrk(url: str, cookies: list[str], connections: int, seconds: int, work: Path) -> Load:
    script = work / "load.lua"
    script.write_text(
        WRK_SCRIPT % {"body": json.dumps(BODY), "cookies": ", ".join(map(json.dumps, cookies))}
    )
    done = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    line = [x for x in done.stdout.splitlines() if x.startswith('{"requests"')][-1]
    raw = json.loads(line)
    return Load(
        raw["requests"],
        raw["duration_us"] / 1e6,
        raw["p50_us"] / 1000,
        raw["p99_us"] / 1000,
        raw["socket_errors"] + raw["non_2xx"],
    )


async def sign_up_with_credits(
    config: stack.StackConfig, count: int
) -> tuple[list[str], list[str]]:
    """``count`` users with credits enough for any run; their session cookies and ids."""
    cookies, user_ids = [], []
    async with httpx.AsyncClient(base_url=config.service_url("auth"), timeout=30) as client:
        for _ in range(count):
            answer = await client.post(
                "/v1/auth/sign-up",
                json={"email": f"bench-{secrets.token_hex(6)}@example.com", "password": "a phrase"},
            )
            answer.raise_for_status()
            cookies.append(f"mf_session={answer.cookies['mf_session']}")
            user_ids.append(answer.json()["user"]["id"])
            client.cookies.clear()
    con = await asyncpg.connect(config.database_url)
    try:
        await con.executemany(
            """INSERT INTO media.credit_accounts (user_id, balance) VALUES ($1, 1000000000)
               ON CONFLICT (user_id) DO UPDATE SET balance = 1000000000""",
            [(user_id,) for user_id in user_ids],
        )
    finally:
        await con.close()
    return cookies, user_ids


async def drain_seconds(database_url: str) -> float:
    """Seconds until the gateway's outbox is empty."""
    started = time.monotonic()
    con = await asyncpg.connect(database_url)
    try:
        while await con.fetchval("SELECT count(*) FROM media.outbox"):
            if time.monotonic() - started > DRAIN_TIMEOUT_SECONDS:
                raise TimeoutError("the gateway's outbox did not drain")
            await asyncio.sleep(0.1)
    finally:
        await con.close()
    return time.monotonic() - started


async def accepted_and_queued(database_url: str, topology: Topology) -> tuple[int, int]:
    con = await asyncpg.connect(database_url)
    try:
        accepted = int(await con.fetchval("SELECT count(*) FROM media.tasks"))
    finally:
        await con.close()
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(topology.jobs_queue, passive=True)
        queued = int(queue.declaration_result.message_count or 0)
    return accepted, queued


async def cleanup(database: str, topology: Topology) -> None:
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await admin.close()
    await delete_topology(AMQP_URL, topology)


def session_checks(gateway_url: str) -> dict[str, float]:
    """The gateway's session checks by outcome (``cached``, ``valid``, ...)."""
    text = httpx.get(f"{gateway_url}/metrics", timeout=10).text
    return {
        outcome: float(value)
        for outcome, value in re.findall(
            r'^session_checks_total\{outcome="([^"]+)"\} (\S+)$', text, re.MULTILINE
        )
    }


async def backend_pids(database_url: str, server_pid: int) -> list[int]:
    """The PostgreSQL backends serving ``server_pid``'s connections."""
    ports = {
        c.laddr.port
        for c in psutil.Process(server_pid).net_connections("tcp")
        if c.raddr and c.raddr.port == 5432
    }
    con = await asyncpg.connect(database_url)
    try:
        rows = await con.fetch("SELECT pid, client_port FROM pg_stat_activity")
    finally:
        await con.close()
    return [r["pid"] for r in rows if r["client_port"] in ports]


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """CPU seconds of the server process (the first pid) and of its PostgreSQL backends."""
    spent = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = psutil.Process(pid).cpu_times()
            spent.append(times.user + times.system)
            continue
        spent.append(0.0)
    return spent[0], sum(spent[1:])


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent on anything but idling (all processes:
    servers, PostgreSQL, RabbitMQ, wrk, the kernel)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


@dataclass(frozen=True)
class MachineLoad:
    busy: float  # share of all cores busy during the round
    ms_per_request: float  # machine CPU per request, until the outbox is empty


def machine_load(
    busy_before: float,
    busy_after_round: float,
    busy_after_drain: float,
    seconds: float,
    requests: int,
) -> MachineLoad:
    cores = psutil.cpu_count() or 1
    return MachineLoad(
        (busy_after_round - busy_before) / (seconds * cores),
        (busy_after_drain - busy_before) * 1000 / requests,
    )


async def submissions_without_http(
    config: stack.StackConfig,
    topology: Topology,
    user_ids: list[str],
    connections: int,
    seconds: int,
) -> tuple[int, float]:
    """The gateway's work for a task minus HTTP, run in this process: ``connections`` callers
    of its ``Submitter`` (the same batched database call) for ``seconds``, with an
    ``OutboxRelay`` publishing the jobs and events. Returns the tasks accepted and the
    machine's CPU ms per task until the outbox is empty (every process, this one included)."""
    env = stack.service_env(config, "gateway")  # the gateway's own configuration
    settings = GatewaySettings.model_validate(
        {k.lower(): v for k, v in env.items() if k.lower() in GatewaySettings.model_fields}
    )
    accepted = 0
    async with (
        db.open_pool(config.database_url, settings.database_pool_size) as pool,
        amqp.open_connection(AMQP_URL, "bench-relay") as connection,
    ):
        submitter = Submitter(
            pool,
            topology,
            cost=settings.task_cost_credits,
            signup_credits=settings.signup_credits,
            submits_per_window=1_000_000_000,
            window_seconds=60,
        )
        relay = asyncio.create_task(OutboxRelay(pool, connection).run())
        await asyncio.sleep(0.5)  # the relay's channel and listener are set up
        busy = machine_busy_seconds()
        until = time.monotonic() + seconds

        async def caller(n: int) -> None:
            nonlocal accepted
            while time.monotonic() < until:
                answer = await submitter.submit(
                    user_id=user_ids[n % len(user_ids)],
                    source_url="https://media.example/videos/clip.mp4",
                )
                accepted += answer.outcome == "accepted"

        await asyncio.gather(*(caller(n) for n in range(connections)))
        await submitter.aclose()
        await drain_seconds(config.database_url)
        spent = machine_busy_seconds() - busy
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay
    return accepted, spent * 1000 / max(accepted, 1)


def per_request(
    before: tuple[float, float], after: tuple[float, float], requests: int
) -> tuple[float, float]:
    """CPU ms per request of the server and of its database backends."""
    server, database = ((a - b) * 1000 / requests for a, b in zip(after, before, strict=True))
    return server, database


@contextlib.contextmanager
def profiled(pid: int, path: str | None, seconds: int) -> Iterator[None]:
    """py-spy samples ``pid`` (CPU only) while the block runs, into ``path``."""
    if not path:
        yield
        return
    spy = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "-p",
            str(pid),
            "-d",
            str(seconds),
            "-r",
            "250",
            "--nonblocking",
            "--format",
            "raw",
            "-o",
            path,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.wait()


def start_bare(config: stack.StackConfig, port: int) -> subprocess.Popen[bytes]:
    log = (config.run_dir / "logs" / "bare_insert.log").open("ab")
    env = stack.service_env(config, "gateway") | {"PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / "bare_insert.py"), str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack.wait_until(lambda: stack.port_open(port), "the bare endpoint", timeout=30)
    return process


def ms(value: float) -> str:
    return f"{value:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--ratio",
        type=float,
        default=None,
        help="fail below this throughput ratio (default: report)",
    )
    parser.add_argument("--users", type=int, default=1, help="requests rotate over their cookies")
    parser.add_argument(
        "--profile", help="record the gateway with py-spy during the last round (collapsed stacks)"
    )
    parser.add_argument("--json", help="also write the results here (for bench/all.py)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: `make deps` installs it (apt-get install wrk)")
    stack.ensure_postgres()
    stack.ensure_rabbitmq()
    suffix = secrets.token_hex(4)
    config = stack.StackConfig(
        run_dir=stack.REPO_ROOT / ".run" / f"bench-gateway-{suffix}",
        database=f"mediaflow_bench_{suffix}",
        amqp_namespace=f"bench-{suffix}",
        ports={"auth": stack.free_port(), "gateway": stack.free_port()},
        extra_env={"LOG_FORMAT": "json", "TASK_SUBMITS_PER_MINUTE": "1000000000"},
    )
    topology = Topology(config.amqp_namespace)
    (config.run_dir / "logs").mkdir(parents=True, exist_ok=True)
    bare: subprocess.Popen[bytes] | None = None
    rounds: list[tuple[Load, Load, float]] = []  # bare, gateway, drain seconds
    # CPU seconds per request of the server process and its PostgreSQL backends (the
    # gateway's include the relay's work until the outbox is empty).
    cpu: dict[str, list[tuple[float, float]]] = {"bare": [], "gateway": []}
    machine: dict[str, list[MachineLoad]] = {"bare": [], "gateway": []}
    try:
        asyncio.run(create_database_if_missing(config.database_url))
        asyncio.run(apply_migrations(config.database_url))
        for service in ("auth", "gateway"):
            stack.wait_healthy(config, service, stack.start_service(config, service))
        bare_port = stack.free_port()
        bare = start_bare(config, bare_port)
        cookies, user_ids = asyncio.run(sign_up_with_credits(config, args.users))
        bare_url = f"http://127.0.0.1:{bare_port}/insert"
        gateway_url = f"{config.service_url('gateway')}/v1/tasks"
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            # Warm-up: code paths, pools, the session cache.
            wrk(bare_url, cookies, args.connections, WARMUP_SECONDS, work)
            wrk(gateway_url, cookies, args.connections, WARMUP_SECONDS, work)
            asyncio.run(drain_seconds(config.database_url))
            gateway_pid = int((config.run_dir / "gateway.pid").read_text())
            # Pools open connections on demand: list each server's backends after warm-up.
            watched = {
                "bare": [bare.pid, *asyncio.run(backend_pids(config.database_url, bare.pid))],
                "gateway": [
                    gateway_pid,
                    *asyncio.run(backend_pids(config.database_url, gateway_pid)),
                ],
            }
            for number in range(args.rounds):
                last = number == args.rounds - 1
                before, busy = cpu_seconds(watched["bare"]), machine_busy_seconds()
                bare_load = wrk(bare_url, cookies, args.connections, args.seconds, work)
                cpu["bare"].append(
                    per_request(before, cpu_seconds(watched["bare"]), bare_load.requests)
                )
                after = machine_busy_seconds()
                machine["bare"].append(
                    machine_load(busy, after, after, bare_load.seconds, bare_load.requests)
                )
                before, busy = cpu_seconds(watched["gateway"]), machine_busy_seconds()
                with profiled(gateway_pid, args.profile if last else None, args.seconds):
                    gateway_load = wrk(gateway_url, cookies, args.connections, args.seconds, work)
                after_round = machine_busy_seconds()
                drain = asyncio.run(drain_seconds(config.database_url))
                cpu["gateway"].append(
                    per_request(before, cpu_seconds(watched["gateway"]), gateway_load.requests)
                )
                machine["gateway"].append(
                    machine_load(
                        busy,
                        after_round,
                        machine_busy_seconds(),
                        gateway_load.seconds,
                        gateway_load.requests,
                    )
                )
                rounds.append((bare_load, gateway_load, drain))
            without_http = asyncio.run(
                submissions_without_http(config, topology, user_ids, args.connections, args.seconds)
            )
        accepted, queued = asyncio.run(accepted_and_queued(config.database_url, topology))
        checks = session_checks(config.service_url("gateway"))
    finally:
        if bare is not None:
            bare.terminate()
            bare.wait()
        stack.down(config.run_dir, include_seaweedfs=False)
        asyncio.run(cleanup(config.database, topology))

    ratios = [g.per_second / b.per_second for b, g, _ in rounds]
    ratio = statistics.median(ratios)
    median_round = rounds[ratios.index(ratio)] if ratio in ratios else rounds[0]
    bare_load, gateway_load, _ = median_round
    all_ok = all(b.failed == 0 and g.failed == 0 for b, g, _ in rounds)
    all_queued = accepted == queued
    passed = all_ok and all_queued and (args.ratio is None or ratio >= args.ratio)

    print(
        f"\nPOST /v1/tasks through the gateway vs a bare Litestar + asyncpg INSERT; one server "
        f"process each, wrk -t1 -c{args.connections} -d{args.seconds}s in its own process\n"
    )
    header = (
        "round",
        "bare req/s",
        "gateway req/s",
        "ratio",
        "bare p99",
        "gateway p99",
        "failed (bare / gw)",
        "outbox drained after",
        "CPU ms/req, server + db (bare / gw)",
        "machine busy (bare / gw)",
        "machine CPU ms/req (bare / gw)",
    )
    rows = [
        (
            str(n + 1),
            f"{b.per_second:.0f}",
            f"{g.per_second:.0f}",
            f"{g.per_second / b.per_second:.2f}",
            ms(b.p99_ms),
            ms(g.p99_ms),
            f"{b.failed} / {g.failed}",
            f"{drain:.1f} s",
            " / ".join(
                f"{server:.2f} + {database:.2f}"
                for server, database in (cpu["bare"][n], cpu["gateway"][n])
            ),
            f"{machine['bare'][n].busy:.0%} / {machine['gateway'][n].busy:.0%}",
            f"{machine['bare'][n].ms_per_request:.2f} / {machine['gateway'][n].ms_per_request:.2f}",
        )
        for n, (b, g, drain) in enumerate(rounds)
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    # The HTTP part of a task priced at a bare request's whole server CPU (its INSERT call
    # included): what the ratio could reach at best, at equal machine load.
    median_index = ratios.index(ratio) if ratio in ratios else 0
    bare_server_ms = cpu["bare"][median_index][0]
    bare_machine_ms = machine["bare"][median_index].ms_per_request
    floor_ms = without_http[1] + bare_server_ms
    best_ratio = bare_machine_ms / floor_ms
    print(
        f"\nwithout HTTP: {without_http[0]} tasks through the gateway's Submitter and an outbox "
        f"relay in this process ({args.connections} callers, {args.seconds} s) cost the machine "
        f"{without_http[1]:.2f} ms each. With a bare request's server CPU "
        f"({bare_server_ms:.2f} ms) for the HTTP part, a task costs at least {floor_ms:.2f} ms "
        f"of machine CPU against a bare request's {bare_machine_ms:.2f}: at equal machine load "
        f"this design reaches at most {best_ratio:.2f} here."
    )
    target = (
        f">= {args.ratio:.2f}"
        if args.ratio is not None
        else f"(reported; at most {best_ratio:.2f})"
    )
    print(
        f"\nsession checks: {', '.join(f'{k} {v:.0f}' for k, v in sorted(checks.items()))}"
        f"\ntasks accepted {accepted}, jobs in the queue {queued}; median ratio {ratio:.2f} "
        f"{target}: {'PASS' if passed else 'FAIL'}"
    )
    write_json(
        args.json,
        "gateway_submit",
        [
            Result(
                f"gateway POST /v1/tasks throughput (c={args.connections}, median of "
                f"{args.rounds})",
                f"{gateway_load.per_second:.0f} req/s",
                f"{bare_load.per_second:.0f} req/s bare INSERT",
                f"{ratio:.2f}",
                f"{target}, all 2xx, every job queued",
                passed,
            ),
            Result(
                "gateway best ratio: machine CPU per task without HTTP + a bare request's server",
                f"{floor_ms:.2f} ms/task",
                f"{bare_machine_ms:.2f} ms/req bare INSERT",
                f"{floor_ms / bare_machine_ms:.2f}",
                f"(reported: throughput ratio <= {best_ratio:.2f})",
                None,
            ),
            Result(
                "gateway POST /v1/tasks p99 latency",
                ms(gateway_load.p99_ms),
                f"{ms(bare_load.p99_ms)} bare INSERT",
                f"{gateway_load.p99_ms / bare_load.p99_ms:.2f}",
                "(reported)",
                None,
            ),
        ],
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
