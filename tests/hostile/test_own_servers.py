"""The system's own servers through ``POST /v1/tasks``, on the default stack (which allows
127.0.0.1 for its sample origin): the SeaweedFS filer, S3, the database, the broker, auth's
ports, every service port and a listener on a port the stack denies are never fetched. What
the gateway can tell from the URL is refused at submit; the rest fails
``blocked_destination`` at the worker, and the listener proves no connection reached it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import media, stack
from tests.hostile.sources import Canary, Origin
from tests.hostile.support import User, World, assert_problem, sign_up


@pytest.fixture(scope="module")
def loopback_origin() -> Iterator[Origin]:
    """An origin on 127.0.0.1, which the default stack may fetch from: it redirects."""
    origin = Origin("127.0.0.1")
    try:
        yield origin
    finally:
        origin.close()


@pytest.fixture(scope="module")
async def victim_object(world: World, origin: tuple[str, Path]) -> str:
    """The stored object of user A's succeeded task: ``tasks/{A}/{task}/1``."""
    victim = await sign_up(world.url, "victim")
    base_url, directory = origin
    media.write_sample_mp4(directory / "victim.mp4", 4096)
    async with world.client() as client:
        response = await client.post(
            "/v1/tasks", json={"url": f"{base_url}/victim.mp4"}, headers=victim.bearer
        )
    assert response.status_code == 202, response.text
    task = await world.wait_terminal(victim, response.json()["task"]["id"])
    assert task["status"] == "succeeded", task
    return f"tasks/{victim.id}/{task['id']}/1"


@pytest.fixture(scope="module")
async def attacker(world: World) -> User:
    return await sign_up(world.url, "attacker")


def _own_ports(world: World, denied: Canary) -> dict[str, int]:
    config = world.config
    return {
        "filer": 8888,
        "s3": stack.S3_PORT,
        "seaweedfs-master": 9333,
        "postgres": 5432,
        "rabbitmq": 5672,
        "rabbitmq-management": 15672,
        "ingress": config.ingress_port,
        "auth": config.ports["auth"],
        "auth-internal": config.auth_internal_port,
        "gateway": config.ports["gateway"],
        "notifier": config.ports["notifier"],
        "worker-metrics": config.ports["worker"],
        "denied-listener": denied.port,
    }


PORT_NAMES = [
    "filer",
    "s3",
    "seaweedfs-master",
    "postgres",
    "rabbitmq",
    "rabbitmq-management",
    "ingress",
    "auth",
    "auth-internal",
    "gateway",
    "notifier",
    "worker-metrics",
    "denied-listener",
]


async def test_the_filer_attack_fails_and_reaches_no_server(
    world: World,
    attacker: User,
    victim_object: str,
    loopback_origin: Origin,
    denied_canary: Canary,
) -> None:
    """User B asks for A's object through the filer, by name and through a redirect from an
    allowed origin: the task fails, B gets nothing, the listener on a denied port sees nothing."""
    path = f"/buckets/{world.config.bucket}/{victim_object}"
    before = len(denied_canary.hits)
    for url in (
        f"http://localhost:8888{path}",
        loopback_origin.redirect(f"http://127.0.0.1:8888{path}"),
        loopback_origin.page(f"http://127.0.0.1:{stack.S3_PORT}/{world.config.bucket}/x"),
        f"http://localhost:{denied_canary.port}/video.mp4",
        loopback_origin.redirect(f"http://127.0.0.1:{denied_canary.port}/video.mp4"),
        loopback_origin.redirect(f"http://[::ffff:127.0.0.1]:{denied_canary.port}/video.mp4"),
    ):
        task = await world.submit_and_fail(attacker, url, "blocked_destination")
        assert task is not None
        message = task["error"]["message"].lower()
        assert "http" not in message and "seaweed" not in message, message
    assert denied_canary.hits[before:] == []


async def test_every_own_port_is_refused_at_the_worker(
    world: World, loopback_origin: Origin, denied_canary: Canary
) -> None:
    """A redirect from the allowed origin to each of the stack's ports: every task fails
    ``blocked_destination``, refunded, with the same words whatever listens there."""
    user = await sign_up(world.url, "own-ports")
    ports = _own_ports(world, denied_canary)
    async with world.client() as client:
        submitted = {}
        for name, port in ports.items():
            url = loopback_origin.redirect(f"http://127.0.0.1:{port}/")
            response = await client.post("/v1/tasks", json={"url": url}, headers=user.bearer)
            assert response.status_code == 202, response.text
            submitted[name] = response.json()["task"]["id"]
    tasks = await asyncio.gather(*(world.wait_terminal(user, t) for t in submitted.values()))
    outcomes = {
        name: (task["status"], (task["error"] or {}).get("code"))
        for name, task in zip(submitted, tasks, strict=True)
    }
    assert outcomes == dict.fromkeys(ports, ("failed", "blocked_destination"))
    assert len({task["error"]["message"] for task in tasks}) == 1, tasks
    for task_id in submitted.values():
        await world.assert_refunded_once(user, task_id)


@pytest.mark.parametrize("name", PORT_NAMES)
async def test_a_literal_own_port_is_refused_at_submit_and_charges_nothing(
    world: World, attacker: User, denied_canary: Canary, name: str
) -> None:
    port = _own_ports(world, denied_canary)[name]
    for host in ("127.0.0.1", "127.1", "[::ffff:127.0.0.1]"):
        before = await world.snapshot(attacker)
        async with world.client() as client:
            response = await client.post(
                "/v1/tasks", json={"url": f"http://{host}:{port}/x"}, headers=attacker.bearer
            )
        assert_problem(response, 422, "blocked_destination")
        assert await world.snapshot(attacker) == before


async def test_the_denied_listener_is_reachable_otherwise(denied_canary: Canary) -> None:
    """The control: the listener answers anyone who is not the worker."""
    import httpx

    async with httpx.AsyncClient() as client:
        response = await client.get(f"{denied_canary.url}/control.mp4")
    assert response.status_code == 200
    assert denied_canary.hits[-1] == "/control.mp4"
