"""Submit → succeeded through the whole stack, and HTTP requests per task with SSE vs polling.

    uv run python bench/e2e_latency.py [--tasks 30] [--slow-tasks 4] [--slow-rate-kib 64]
                                       [--p99-target 2.0] [--json PATH]

Brings up a private devstack (auth, gateway, notifier, worker, nginx on free ports; the shared
SeaweedFS; a throwaway database, AMQP namespace and bucket) and a media origin on 127.0.0.1
(``bench/origin.py``, a process of its own). A user signs up through nginx, as a browser would.

- Latency: ``--tasks`` tasks of a 1 MiB MP4, one after another, each from a URL of its own (no
  cache hits). The client times ``POST /v1/tasks`` to the ``succeeded`` event on its
  ``GET /v1/events?task=…`` stream. The baseline, run right before each task: the same 1 MiB
  fetched from the origin and put to the same bucket directly (one GET, one PutObject).
- Requests per task: every task above is also watched by a second client polling
  ``GET /v1/tasks/{id}`` with ``If-None-Match`` every 3 s until the task ends, as the web page
  did before SSE; each client counts the HTTP requests it makes, the submit included. The
  same is done for ``--slow-tasks`` tasks at once whose origin paces the 1 MiB at
  ``--slow-rate-kib`` KiB/s (16 s at 64), which is where polling costs.

Passes when every task succeeded, the task p99 is at most ``--p99-target`` seconds, and an SSE
client makes at most 2 requests per task (submit + one stream).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import secrets
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from results import Result, write_json
from support import Bench, bench_world, serving_process

from mediaflow_libs.s3 import open_s3
from mediaflow_libs.settings import MIB

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devstack import media, stack

BENCH_DIR = Path(__file__).resolve().parent
POLL_SECONDS = 3.0
TASK_TIMEOUT_SECONDS = 120.0
TERMINAL = {"succeeded", "failed", "canceled"}
SSE_TARGET_REQUESTS = 2.0


@dataclass(frozen=True)
class Watched:
    status: str
    seconds: float  # submit to the terminal event (SSE client)
    sse_requests: int
    polling_requests: int


class Counted(httpx.AsyncClient):
    """An HTTP client that counts the requests it sends."""

    def __init__(self, **kwargs: Any) -> None:
        self.requests = 0
        super().__init__(event_hooks={"request": [self._count]}, **kwargs)

    async def _count(self, _: httpx.Request) -> None:
        self.requests += 1


async def watch_sse(client: Counted, task_id: str) -> str:
    """Read the task's event stream until it ends; its last status."""
    async with client.stream("GET", "/v1/events", params={"task": task_id}) as stream:
        stream.raise_for_status()
        async for line in stream.aiter_lines():
            if line.startswith("data:"):
                task = json.loads(line[5:])
                if task["id"] == task_id and task["status"] in TERMINAL:
                    return str(task["status"])
    return "stream ended"


async def watch_polling(client: Counted, task_id: str) -> str:
    """Poll every 3 s with the last ETag until the task ends; its last status."""
    etag, status = None, "queued"
    while status not in TERMINAL:
        await asyncio.sleep(POLL_SECONDS)
        headers: dict[str, str] = {"if-none-match": etag} if etag else {}
        answer = await client.get(f"/v1/tasks/{task_id}", headers=headers)
        if answer.status_code == 200:
            etag, status = answer.headers.get("etag"), answer.json()["task"]["status"]
        elif answer.status_code != 304:
            answer.raise_for_status()
    return status


async def run_task(public_url: str, cookie: str, url: str) -> Watched:
    """Submit ``url`` and watch the task with an SSE client and a polling client at once."""
    headers = {"cookie": cookie}
    async with (
        Counted(base_url=public_url, headers=headers, timeout=TASK_TIMEOUT_SECONDS) as sse,
        Counted(base_url=public_url, headers=headers, timeout=30) as polling,
    ):
        started = time.monotonic()
        answer = await sse.post("/v1/tasks", json={"url": url})
        answer.raise_for_status()
        task_id = answer.json()["task"]["id"]
        polling.requests += 1  # the polling client would have submitted it too
        async with asyncio.timeout(TASK_TIMEOUT_SECONDS):
            sse_watch = asyncio.create_task(watch_sse(sse, task_id))
            polling_watch = asyncio.create_task(watch_polling(polling, task_id))
            status = await sse_watch
            seconds = time.monotonic() - started
            await polling_watch
    return Watched(status, seconds, sse.requests, polling.requests)


async def fetch_and_put(world: Bench, url: str, key: str) -> float:
    """The baseline: the source fetched whole and put to the bucket directly; seconds."""
    async with open_s3(world.s3_settings) as s3, httpx.AsyncClient(timeout=60) as client:
        started = time.monotonic()
        body = (await client.get(url)).raise_for_status().content
        await s3.put_object(Bucket=world.config.bucket, Key=key, Body=body)
        return time.monotonic() - started


async def sign_up(public_url: str) -> str:
    async with httpx.AsyncClient(base_url=public_url, timeout=30) as client:
        answer = await client.post(
            "/v1/auth/sign-up",
            json={"email": f"bench-{secrets.token_hex(6)}@example.com", "password": "a phrase!"},
        )
        answer.raise_for_status()
        return f"mf_session={answer.cookies['mf_session']}"


@contextmanager
def origin(directory: Path) -> Iterator[str]:
    port = stack.free_port()
    command = [sys.executable, str(BENCH_DIR / "origin.py"), str(directory), str(port)]
    with serving_process(command, port) as url:
        yield url


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


async def measure(
    world: Bench, source: str, args: argparse.Namespace
) -> tuple[list[float], list[Watched], list[Watched]]:
    public_url = world.config.public_url
    cookie = await sign_up(public_url)
    # Warm-up: connections, pools, the session caches, the bucket.
    await fetch_and_put(world, f"{source}/clip.mp4?warm", "bench/warm")
    await run_task(public_url, cookie, f"{source}/clip.mp4?warm")
    baseline, fast = [], []
    for number in range(args.tasks):
        baseline.append(await fetch_and_put(world, f"{source}/clip.mp4?b={number}", "bench/b"))
        fast.append(await run_task(public_url, cookie, f"{source}/clip.mp4?n={number}"))
    slow = await asyncio.gather(
        *(
            run_task(public_url, cookie, f"{source}/clip.mp4?rate={args.slow_rate_kib}&s={n}")
            for n in range(args.slow_tasks)
        )
    )
    return baseline, fast, list(slow)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=30)
    parser.add_argument("--slow-tasks", type=int, default=4)
    parser.add_argument("--slow-rate-kib", type=int, default=64)
    parser.add_argument("--p99-target", type=float, default=1.0, help="seconds")
    parser.add_argument("--json", help="also write the results here (for bench/all.py)")
    args = parser.parse_args()
    with bench_world("e2e") as world:
        config = world.config
        config.extra_env.update({"SIGNUP_CREDITS": "100000", "TASK_SUBMITS_PER_MINUTE": "100000"})
        media.write_sample_mp4(world.origin_dir / "clip.mp4", MIB)
        try:
            stack.up(config, data_dir=stack.REPO_ROOT / ".data")
            with origin(world.origin_dir) as source:
                baseline, fast, slow = asyncio.run(measure(world, source, args))
        finally:
            stack.down(config.run_dir, include_seaweedfs=False)

    task_seconds = [w.seconds for w in fast]
    p50, p99 = percentile(task_seconds, 0.5), percentile(task_seconds, 0.99)
    b50, b99 = percentile(baseline, 0.5), percentile(baseline, 0.99)
    all_succeeded = all(w.status == "succeeded" for w in [*fast, *slow])
    sse_fast = statistics.mean(w.sse_requests for w in fast)
    poll_fast = statistics.mean(w.polling_requests for w in fast)
    sse_slow = statistics.mean(w.sse_requests for w in slow)
    poll_slow = statistics.mean(w.polling_requests for w in slow)
    slow_seconds = statistics.mean(w.seconds for w in slow)
    latency_ok = all_succeeded and p99 <= args.p99_target
    requests_ok = max(sse_fast, sse_slow) <= SSE_TARGET_REQUESTS

    def row(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(cells) + " |"

    print(
        f"\nEnd to end through nginx, 1 MiB MP4 from an origin on 127.0.0.1, {args.tasks} tasks\n"
    )
    print(row(("", "p50", "p99", "max")))
    print(row(("---", "---", "---", "---")))
    print(
        row(
            (
                "task: submit → succeeded event",
                f"{p50:.3f} s",
                f"{p99:.3f} s",
                f"{max(task_seconds):.3f} s",
            )
        )
    )
    print(
        row(
            (
                "baseline: GET origin + PutObject",
                f"{b50:.3f} s",
                f"{b99:.3f} s",
                f"{max(baseline):.3f} s",
            )
        )
    )
    print("\nHTTP requests per task, submit included (every task watched both ways at once)\n")
    print(row(("tasks", "task length", "SSE client", "3 s polling client")))
    print(row(("---", "---", "---", "---")))
    print(row((f"{args.tasks} x 1 MiB", f"{p50:.1f} s", f"{sse_fast:.2f}", f"{poll_fast:.2f}")))
    print(
        row(
            (
                f"{args.slow_tasks} x 1 MiB at {args.slow_rate_kib} KiB/s",
                f"{slow_seconds:.1f} s",
                f"{sse_slow:.2f}",
                f"{poll_slow:.2f}",
            )
        )
    )
    print(
        f"\nevery task succeeded: {all_succeeded}; "
        f"{'PASS' if latency_ok and requests_ok else 'FAIL'}"
    )
    write_json(
        args.json,
        "e2e_latency",
        [
            Result(
                f"e2e submit → succeeded p50, 1 MiB ({args.tasks} tasks)",
                f"{p50:.3f} s",
                f"{b50:.3f} s GET + PutObject",
                f"{p50 / b50:.1f}",
                "(reported)",
                None,
            ),
            Result(
                "e2e submit → succeeded p99, 1 MiB",
                f"{p99:.3f} s",
                f"{b99:.3f} s GET + PutObject",
                f"{p99 / b99:.1f}",
                f"<= {args.p99_target:g} s, every task succeeded",
                latency_ok,
            ),
            Result(
                f"HTTP requests per task, SSE ({slow_seconds:.0f} s tasks)",
                f"{sse_slow:.2f}",
                f"{poll_slow:.2f} polling every 3 s",
                f"{sse_slow / poll_slow:.2f}",
                f"<= {SSE_TARGET_REQUESTS:g} (submit + one stream)",
                requests_ok,
            ),
            Result(
                f"HTTP requests per task, SSE ({p50:.1f} s tasks)",
                f"{sse_fast:.2f}",
                f"{poll_fast:.2f} polling every 3 s",
                f"{sse_fast / poll_fast:.2f}",
                f"<= {SSE_TARGET_REQUESTS:g}",
                sse_fast <= SSE_TARGET_REQUESTS,
            ),
        ],
    )
    return 0 if latency_ok and requests_ok else 1


if __name__ == "__main__":
    sys.exit(main())
