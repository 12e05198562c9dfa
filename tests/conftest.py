"""A whole mediaflow stack (four service processes and nginx) on free ports, for tests
that go through the ingress like a user."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import media, stack
from tests.hostile.sources import Canary


@pytest.fixture(scope="session")
def denied_canary() -> Iterator[Canary]:
    """A server on 127.0.0.1 whose port the running stack puts in EGRESS_DENY: it stands for
    one of the system's own servers, and counts whatever reaches it."""
    canary = Canary("127.0.0.1")
    try:
        yield canary
    finally:
        canary.close()


@pytest.fixture(scope="session")
def running_stack(
    infra, tmp_path_factory: pytest.TempPathFactory, denied_canary: Canary
) -> Iterator[stack.StackConfig]:  # type: ignore[no-untyped-def]
    config = stack.StackConfig(
        run_dir=tmp_path_factory.mktemp("stack"),
        database=infra.database,
        amqp_namespace=infra.amqp_namespace,
        bucket=infra.bucket,
        ingress_port=stack.free_port(),
        ports={service: stack.free_port() for service in stack.SERVICES},
        extra_env={
            "LOG_LEVEL": "info",
            "EGRESS_DENY": f"127.0.0.1/32:{denied_canary.port}",
            # Every suite signs in from 127.0.0.1, the fuzzer with random credentials: one
            # address's budget would run out for the suites after it. The per-address limit
            # has its own test, on an auth of its own.
            "SIGN_IN_MAX_FAILURES_PER_IP": "1000000",
        },
    )
    try:
        stack.up(config, data_dir=stack.REPO_ROOT / ".data")
        yield config
    finally:
        stack.down(config.run_dir, include_seaweedfs=False)


@pytest.fixture(scope="session")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A local media origin: (base URL, directory it serves)."""
    directory = tmp_path_factory.mktemp("origin")
    with media.LocalOrigin(directory) as server:
        yield server.url, directory
