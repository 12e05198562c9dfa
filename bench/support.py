"""What the worker benchmarks share: a throwaway database, AMQP namespace and bucket, a
media origin in a process of its own, a real ``mediaflow-worker`` process, tasks submitted
the way the gateway does, RSS sampling, and the table they print.

The broker is ``AMQP_URL`` (default: the local RabbitMQ), as for the services devstack starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psutil
from pydantic import SecretStr

from mediaflow_libs import credits, db, outbox, task_transitions, tasks
from mediaflow_libs.amqp import Topology, delete_topology
from mediaflow_libs.contracts import Job
from mediaflow_libs.logging import configure_logging
from mediaflow_libs.migrate import apply_migrations, create_database_if_missing
from mediaflow_libs.s3 import open_s3
from mediaflow_libs.settings import MIB, S3Settings

# Run as plain scripts: the repository's top-level devstack package is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devstack import media, stack

SAMPLE_SECONDS = 0.02
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


class RssSampler:
    """Samples one process's resident set size from a thread until stopped; with
    ``tree``, the sum over the process and all its descendants (ffmpeg, any helper)."""

    def __init__(self, pid: int, *, tree: bool = False) -> None:
        self._process = psutil.Process(pid)
        self._tree = tree
        self._stop = threading.Event()
        self.peak = 0
        self.peaks: dict[str, int] = {}  # with ``tree``: by process name, summed per name
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        total = self._process.memory_info().rss
        if not self._tree:
            return total
        by_name = {"worker": total}
        for child in self._process.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):  # ended since the listing
                rss = child.memory_info().rss
                total += rss
                by_name[child.name()] = by_name.get(child.name(), 0) + rss
        for name, rss in by_name.items():
            self.peaks[name] = max(self.peaks.get(name, 0), rss)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._rss())
            except psutil.NoSuchProcess:
                return
            time.sleep(SAMPLE_SECONDS)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def idle_rss(pid: int, seconds: float = 2.0, *, tree: bool = False) -> int:
    with RssSampler(pid, tree=tree) as sampler:
        time.sleep(seconds)
    return sampler.peak


@dataclass(frozen=True)
class Outcome:
    status: str
    sha256: str | None
    error: str | None
    seconds: float  # submit to end
    processing_seconds: float | None  # the task's running → succeeded, as its events record
    object_key: str | None = None
    size: int | None = None


@dataclass
class Bench:
    """One benchmark run's private world."""

    config: stack.StackConfig
    s3_settings: S3Settings
    origin_dir: Path

    @property
    def topology(self) -> Topology:
        return Topology(self.config.amqp_namespace)


@contextmanager
def bench_world(name: str) -> Iterator[Bench]:
    configure_logging("bench", "warning", "console")  # the table is the output
    stack.ensure_postgres()
    stack.ensure_rabbitmq()
    creds = stack.local_secrets()
    run_root = stack.REPO_ROOT / ".run"
    stack.ensure_seaweedfs(stack.REPO_ROOT / ".data" / "seaweedfs", run_root / "logs", creds)
    suffix = secrets.token_hex(4)
    config = stack.StackConfig(
        run_dir=run_root / f"bench-{name}-{suffix}",
        database=f"mediaflow_bench_{suffix}",
        amqp_namespace=f"bench-{suffix}",
        bucket=f"bench-{suffix}",
        # Never make run's ports (auth's internal one included): a bench runs beside it.
        ingress_port=stack.free_port(),
        ports={service: stack.free_port() for service in stack.SERVICES},
        extra_env={"EGRESS_ALLOW_CIDRS": "127.0.0.1/32", "LOG_FORMAT": "json"},
    )
    s3_settings = S3Settings(
        s3_bucket=config.bucket,
        s3_access_key_id=SecretStr(creds["S3_ACCESS_KEY_ID"]),
        s3_secret_access_key=SecretStr(creds["S3_SECRET_ACCESS_KEY"]),
    )
    asyncio.run(create_database_if_missing(config.database_url))
    asyncio.run(apply_migrations(config.database_url))
    world = Bench(config, s3_settings, config.run_dir / "origin")
    try:
        yield world
    finally:
        shutil.rmtree(world.origin_dir, ignore_errors=True)
        asyncio.run(cleanup(world))


@contextmanager
def serving_process(command: list[str], port: int, cwd: Path | None = None) -> Iterator[str]:
    """Run an HTTP origin ``command`` listening on 127.0.0.1:``port`` in a process of its own
    (sharing no interpreter lock with the bench's sampling); its base URL while it runs."""
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        stack.wait_until(lambda: stack.port_open(port), f"the origin on port {port}", timeout=10)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()


@contextmanager
def origin_process(directory: Path) -> Iterator[str]:
    """Serve ``directory`` with ``bench/origin.py``."""
    port = stack.free_port()
    script = Path(__file__).with_name("origin.py")
    command = [sys.executable, str(script), str(directory), str(port)]
    with serving_process(command, port) as url:
        yield url


def write_source(world: Bench, name: str, size_mib: int) -> str:
    """A sample MP4 of ``size_mib`` in the origin's directory; returns its SHA-256."""
    return media.write_sample_mp4(world.origin_dir / name, size_mib * MIB)


@contextmanager
def worker_process(world: Bench, env: dict[str, str] | None = None) -> Iterator[int]:
    """A real ``mediaflow-worker`` on a free port, until the block ends; yields its pid."""
    config = world.config
    config.ports["worker"] = stack.free_port()
    config.extra_env.update(env or {})
    process = stack.start_service(config, "worker")
    try:
        stack.wait_healthy(config, "worker", process)
        yield process.pid
    finally:
        stack.stop_pid_file(config.run_dir / "worker.pid")


async def submit_and_wait(world: Bench, url: str, within: float) -> Outcome:
    """Create the task as the gateway does (task row, charge, event and job in one
    transaction; the worker's outbox relay publishes the job) and wait until it ends."""
    topology = world.topology
    user_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
    # The pool registers the JSON codecs task events need.
    async with db.open_pool(world.config.database_url, size=1) as pool, pool.acquire() as con:
        started = time.monotonic()
        async with con.transaction():
            await credits.ensure_account(con, user_id, 10)
            row = await con.fetchrow(
                """INSERT INTO media.tasks (id, user_id, source_url, cost, progress)
                   VALUES ($1, $2, $3, 1, 0) RETURNING *""",
                task_id,
                user_id,
                url,
            )
            await credits.charge(con, user_id, task_id, 1)
            await task_transitions.record_event(con, topology, row)
            await outbox.enqueue(
                con,
                exchange=topology.jobs_exchange,
                routing_key=topology.job_routing_key(),
                body=Job(task_id=task_id, user_id=user_id, source_url=url).SerializeToString(),
                mandatory=True,
                headers={"message_type": "mediaflow.v1.Job"},
            )
        while time.monotonic() - started < within:
            row = await con.fetchrow(
                """SELECT status, result_sha256, error_code, error_message, object_key,
                          result_size
                   FROM media.tasks WHERE id = $1""",
                task_id,
            )
            if row is None:
                raise RuntimeError(f"task {task_id} is not in the database")
            if row["status"] in tasks.TERMINAL_STATUSES:
                elapsed = time.monotonic() - started
                error = (
                    f"{row['error_code']}: {row['error_message']}" if row["error_code"] else None
                )
                processing = await con.fetchval(
                    """SELECT extract(epoch FROM max(created_at) - min(created_at))::float8
                       FROM media.task_events WHERE task_id = $1 AND status <> 'queued'""",
                    task_id,
                )
                return Outcome(
                    row["status"],
                    row["result_sha256"],
                    error,
                    elapsed,
                    processing,
                    row["object_key"],
                    row["result_size"],
                )
            await asyncio.sleep(0.05)
    return Outcome("timed out", None, f"not finished after {within:.0f}s", within, None)


@dataclass(frozen=True)
class Stored:
    """A stored object as read back: its SHA-256, and what ffprobe finds in it."""

    sha256: str
    size: int
    duration: float | None
    streams: tuple[str, ...]  # codec types, in order


async def read_stored(world: Bench, key: str, directory: Path) -> Stored:
    """Download the object ``key`` to ``directory`` (hashed as it comes, never held
    whole), ffprobe it, and remove the file."""
    path = directory / "stored-object"
    digest = hashlib.sha256()
    size = 0
    async with open_s3(world.s3_settings) as s3:
        answer = await s3.get_object(Bucket=world.config.bucket, Key=key)
        async with answer["Body"] as body:
            with path.open("wb") as out:
                while chunk := await body.read(MIB):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
    try:
        probe = [
            "ffprobe",
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
            str(path),
        ]
        ran = await asyncio.to_thread(
            lambda: subprocess.run(probe, check=True, capture_output=True)
        )
        probed = json.loads(ran.stdout)
    finally:
        path.unlink()
    duration = probed.get("format", {}).get("duration")
    return Stored(
        digest.hexdigest(),
        size,
        float(duration) if duration else None,
        tuple(s["codec_type"] for s in probed.get("streams", [])),
    )


def check_stored(
    outcome: Outcome, stored: Stored, duration: float, streams: set[str]
) -> str | None:
    """What is wrong with a stored object against what the worker reported and the source
    it came from (its duration within a second, these stream types), or None."""
    if (stored.sha256, stored.size) != (outcome.sha256, outcome.size):
        return "stored bytes differ from the task's result"
    if set(stored.streams) != streams:
        return f"streams {sorted(stored.streams)}, not {sorted(streams)}"
    if stored.duration is None or abs(stored.duration - duration) > 1:
        return f"duration {stored.duration} s, not {duration:.0f} s"
    return None


async def cleanup(world: Bench) -> None:
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{world.config.database}" WITH (FORCE)')
    finally:
        await admin.close()
    await delete_topology(AMQP_URL, world.topology)
    async with open_s3(world.s3_settings) as s3:
        for listing in ("list_multipart_uploads", "list_objects_v2"):
            found = await getattr(s3, listing)(Bucket=world.config.bucket)
            for upload in found.get("Uploads", []):
                await s3.abort_multipart_upload(
                    Bucket=world.config.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
            for item in found.get("Contents", []):
                await s3.delete_object(Bucket=world.config.bucket, Key=item["Key"])
        await s3.delete_bucket(Bucket=world.config.bucket)


def print_table(title: str, header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def mib(value: float) -> str:
    return f"{value / MIB:.1f} MiB"
