"""A worker process SIGKILLed mid-stream: its task passes to another worker once the dead
one's lease runs out, and ends stored once, charged once."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aio_pika.abc import AbstractChannel

from devstack import stack
from mediaflow_libs.amqp import Topology
from mediaflow_worker.settings import WorkerSettings
from services.worker.tests.support import (
    MIB,
    TASK_COST,
    Origin,
    create_task,
    eventually,
    finished,
    jobs_counted,
    ledger,
    open_uploads,
    own_namespace,
    parts_uploading,
    remove_stored,
    running,
    slow_source,
    stored_keys,
    worker_settings,
)


def environment(settings: WorkerSettings) -> dict[str, str]:
    """The environment that makes ``mediaflow-worker`` run with ``settings``."""
    values = settings.model_dump()
    env = {
        name.upper(): (
            value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
        )
        for name, value in values.items()
        if value is not None
    }
    return dict(os.environ) | env | {"LOG_FORMAT": "json"}


def start(settings: WorkerSettings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(Path(stack.REPO_ROOT, ".venv", "bin", "mediaflow-worker"))],
            env=environment(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def tail(log: Path) -> str:
    return log.read_text()[-2000:]


@asynccontextmanager
async def worker_process(
    settings: WorkerSettings, log: Path
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``mediaflow-worker`` as a process of its own, until the block ends."""
    process = start(settings, log)
    try:

        async def ready() -> bool:
            assert process.poll() is None, tail(log)
            try:
                async with httpx.AsyncClient() as client:
                    response = await client.get(f"http://127.0.0.1:{settings.port}/readyz")
                    return response.status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, within=30)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def test_a_worker_killed_mid_stream_is_taken_over_by_another(
    infra: Any,
    db_pool: asyncpg.Pool,
    channel: AbstractChannel,
    origin: Origin,
    s3: Any,
    make_mp4: Callable[[int], bytes],
    tmp_path: Path,
) -> None:
    doomed = worker_settings(infra)
    survivor = worker_settings(infra, amqp_namespace=doomed.amqp_namespace)
    topology = Topology(doomed.amqp_namespace)
    media = make_mp4(30 * MIB)
    async with own_namespace(infra, db_pool, topology):
        async with worker_process(doomed, tmp_path / "doomed.log") as process:
            task = await create_task(db_pool, channel, topology, slow_source(origin, media))
            await eventually(lambda: parts_uploading(db_pool, s3, doomed, task))
            holder = await db_pool.fetchval(
                "SELECT lease_owner FROM media.tasks WHERE id = $1", task.task_id
            )
            assert holder.split("/")[0].endswith(f":{process.pid}")
            deferred = jobs_counted("deferred")
            async with running(survivor, asyncio.Event()):
                os.killpg(process.pid, signal.SIGKILL)  # no shutdown, no abort: a dead node
                process.wait()
                row = await finished(db_pool, task.task_id)
                # The job came back at once, but waited out the dead worker's lease.
                assert jobs_counted("deferred") > deferred

        assert row["status"] == "succeeded"
        assert row["attempt"] == 2
        assert row["result_sha256"] == hashlib.sha256(media).hexdigest()
        assert row["lease_owner"] is None
        assert await stored_keys(s3, doomed.s3_bucket, task.prefix) == [f"{task.prefix}2"]
        assert await open_uploads(s3, doomed.s3_bucket, task.prefix) == []
        assert await ledger(db_pool, task.task_id) == [("charge", -TASK_COST)]
    await remove_stored(s3, doomed.s3_bucket, task)
