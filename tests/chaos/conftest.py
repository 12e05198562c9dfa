"""The chaos tests' stack: the four services (two workers) and nginx on free ports, on a
PostgreSQL cluster and a RabbitMQ node of their own, which the tests restart at will.

``make test`` runs the bounded form; ``make chaos`` sets ``CHAOS_SCALE`` (counts and
durations grow with it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devstack import stack
from mediaflow_libs.migrate import apply_migrations, create_database_if_missing
from tests.chaos.servers import PrivatePostgres, PrivateRabbitMQ
from tests.chaos.support import LEASE_SECONDS, REPORTS, ChaosStack, delete_bucket
from tests.realtime.support import SlowOrigin

ORIGIN_BYTES_PER_SECOND = 1024 * 1024


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORTS:
        terminalreporter.section("chaos counts")
        for line in REPORTS:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def private_servers() -> Iterator[tuple[PrivatePostgres, PrivateRabbitMQ]]:
    postgres, rabbitmq = PrivatePostgres(), PrivateRabbitMQ()
    try:
        # The broker takes seconds to boot: the database comes up meanwhile.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            broker = pool.submit(rabbitmq.start)
            postgres.init()
            postgres.start()
            broker.result()
        yield postgres, rabbitmq
    finally:
        rabbitmq.destroy()
        postgres.destroy()


@pytest.fixture(scope="session")
def chaos_stack(
    private_servers: tuple[PrivatePostgres, PrivateRabbitMQ],
) -> Iterator[ChaosStack]:
    postgres, rabbitmq = private_servers
    suffix = secrets.token_hex(4)
    run_root = Path(tempfile.mkdtemp(prefix="mfchaos-stack-"))
    config = stack.StackConfig(
        run_dir=run_root / "stack",
        database="mediaflow_chaos",
        bucket=f"chaos-{suffix}",
        ingress_port=stack.free_port(),
        ports={service: stack.free_port() for service in stack.SERVICES},
        postgres_url=postgres.url,
        amqp_url=rabbitmq.url,
        extra_env={
            "LOG_LEVEL": "info",
            "SIGNUP_CREDITS": "100000",
            "TASK_SUBMITS_PER_MINUTE": "100000",
            "LEASE_SECONDS": str(LEASE_SECONDS),
            "LEASE_HEARTBEAT_SECONDS": "1",
            "SSE_HEARTBEAT_SECONDS": "2",
            "SSE_RETRY_MS": "200",
            # A retry waiting in a classic delay queue can vanish when the broker stops
            # mid-expiry; the worker's reaper finds such tasks again. Sooner here than in
            # production (300 s), so that a run sees it happen.
            "STALE_TASK_SECONDS": "60",
            "REAPER_INTERVAL_SECONDS": "10",
        },
    )
    # A second worker process beside the stack's own: one can die while the other works.
    worker_b = dataclasses.replace(
        config,
        run_dir=run_root / "worker-b",
        ports={**config.ports, "worker": stack.free_port()},
    )
    chaos = ChaosStack(config, worker_b, postgres, rabbitmq, signup_credits=100000)
    try:
        stack.ensure_seaweedfs(
            stack.REPO_ROOT / ".data" / "seaweedfs",
            stack.REPO_ROOT / ".run" / "logs",
            stack.local_secrets(),
        )
        asyncio.run(create_database_if_missing(config.database_url))
        asyncio.run(apply_migrations(config.database_url))
        # All five processes start at once (stack.up starts them one after another).
        started = [(c, s, stack.start_service(c, s)) for c, s in chaos.processes]
        for process_config, service, process in started:
            stack.wait_healthy(process_config, service, process)
        stack.start_nginx(config)
        yield chaos
    finally:
        with contextlib.suppress(Exception):
            stack.down(worker_b.run_dir, include_seaweedfs=False)
        with contextlib.suppress(Exception):
            stack.down(config.run_dir, include_seaweedfs=False)
        with contextlib.suppress(Exception):
            asyncio.run(delete_bucket(config.bucket))
        # The services' logs of the last run stay for a post-mortem (git-ignored).
        keep = stack.REPO_ROOT / "test-artifacts" / "chaos-logs"
        shutil.rmtree(keep, ignore_errors=True)
        with contextlib.suppress(Exception):
            shutil.copytree(run_root, keep, ignore=shutil.ignore_patterns("nginx-tmp", "*.pid"))
        shutil.rmtree(run_root, ignore_errors=True)


@pytest.fixture(scope="session")
def chaos_origin() -> Iterator[SlowOrigin]:
    """Small sources served at 1 MiB/s, so a job lasts long enough to be interrupted."""
    directory = Path(tempfile.mkdtemp(prefix="mfchaos-origin-"))
    with SlowOrigin(directory, ORIGIN_BYTES_PER_SECOND) as origin:
        yield origin


@pytest.fixture
async def healthy_stack(chaos_stack: ChaosStack) -> AsyncIterator[ChaosStack]:
    """The stack, every process ready before and after the test (a test that broke it
    would otherwise fail the next one)."""
    await chaos_stack.wait_all_ready(within=120)
    yield chaos_stack
    await chaos_stack.wait_all_ready(within=120)
