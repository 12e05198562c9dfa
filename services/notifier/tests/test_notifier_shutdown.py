"""The ``mediaflow-notifier`` console script as a real process: SIGTERM ends open streams at
once and cleanly, so clients reconnect elsewhere instead of waiting out the grace period."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from services.notifier.tests.support import (
    WAIT_SECONDS,
    User,
    free_port,
    open_stream,
)

# uvicorn's grace period in `web.serve`: without the notifier's own handling a stream
# would stay open this long and then be cut off.
GRACE_PERIOD_SECONDS = 10


async def _ready(url: str, process: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient(base_url=url) as client, asyncio.timeout(30):
        while True:
            assert process.returncode is None, "the notifier exited during start-up"
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)


async def test_sigterm_ends_streams_cleanly_and_at_once(
    infra: Any, auth_url: str, alice: User
) -> None:
    port = free_port()
    env = os.environ | {
        "PORT": str(port),
        "DATABASE_URL": infra.database_url,
        "AMQP_URL": infra.amqp_url,
        "AMQP_NAMESPACE": infra.amqp_namespace,
        "SERVICE_SECRET": infra.secrets["SERVICE_SECRET"],
        "AUTH_INTERNAL_URL": auth_url,
        "LOG_FORMAT": "json",
    }
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("mediaflow-notifier")),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await _ready(url, process)
        async with open_stream(url, alice) as first, open_stream(url, alice) as second:
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            # `ended` fails on a body cut off mid-chunk: the end must be a clean one.
            assert await first.ended(within=GRACE_PERIOD_SECONDS / 2)
            assert await second.ended(within=GRACE_PERIOD_SECONDS / 2)
            assert time.monotonic() - signalled < GRACE_PERIOD_SECONDS / 2
        async with asyncio.timeout(WAIT_SECONDS):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode in (0, -signal.SIGTERM)
    logs = [json.loads(line) for line in output.decode().splitlines() if line.startswith("{")]
    ended = [entry for entry in logs if entry.get("event") == "sse.stream_ended"]
    assert [entry["reason"] for entry in ended] == ["shutdown", "shutdown"]
