"""The baseline of ``bench/sse_bench.py``: about the least a Litestar Server-Sent Events
endpoint can be, on the same server stack as the notifier (uvicorn, uvloop, httptools).

``GET /events?client=N`` streams what is put in client N's queue. ``POST /burst`` makes
the app itself emit ``rate`` events a second for ``seconds`` seconds, round robin over the
connected clients, each carrying the time it was made, so the load generator can measure
delivery lag the way it does for the notifier (whose events come through RabbitMQ).

Run: ``python bench/sse_minimal.py PORT``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections.abc import AsyncIterator

import uvicorn
from litestar import Litestar, get, post
from litestar.response import ServerSentEvent

_queues: dict[int, asyncio.Queue[str]] = {}
_bursts: set[asyncio.Task[None]] = set()


@get("/events")
async def events(client: int) -> ServerSentEvent:
    queue: asyncio.Queue[str] = asyncio.Queue()
    _queues[client] = queue

    async def stream() -> AsyncIterator[str]:
        try:
            while True:
                yield await queue.get()
        finally:
            _queues.pop(client, None)

    return ServerSentEvent(stream(), retry_duration=3000)


@get("/clients")
async def clients() -> dict[str, int]:
    return {"connected": len(_queues)}


@post("/burst", status_code=202)
async def burst(rate: int, seconds: float) -> dict[str, int]:
    total = int(rate * seconds)
    task = asyncio.create_task(_emit(rate, total))
    _bursts.add(task)
    task.add_done_callback(_bursts.discard)
    return {"events": total}


async def _emit(rate: int, total: int) -> None:
    targets = list(_queues.values())
    started = time.monotonic()
    for number in range(total):
        # Absolute schedule: a late tick catches up instead of drifting.
        delay = started + number / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        targets[number % len(targets)].put_nowait(json.dumps({"sent": time.time()}))


def main() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    app = Litestar(
        route_handlers=[events, clients, burst], openapi_config=None, logging_config=None
    )
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
