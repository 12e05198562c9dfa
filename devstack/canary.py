"""A live canary for operators (``make canary``; never in CI, it needs the internet): submit
a short list of public platform links to a running stack and print which work today.

The stack is ``MEDIAFLOW_URL`` (``make run``'s by default); a fresh user is signed up, so the
list stays within its sign-up credits. Each link asks for small output (``quality: 144`` or
audio only) to keep the run short.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from typing import Any

import httpx

# Long-lived public links, one per extractor worth watching; each costs a credit.
LINKS: list[tuple[str, str, dict[str, Any]]] = [
    ("youtube", "https://www.youtube.com/watch?v=jNQXAC9IVRw", {"quality": 144}),
    ("vimeo", "https://vimeo.com/76979871", {"quality": 240}),
    ("dailymotion", "https://www.dailymotion.com/video/x5kesuj", {"quality": 144}),
    ("soundcloud", "https://soundcloud.com/forss/flickermood", {"mode": "audio"}),
    ("ted", "https://www.ted.com/talks/dan_dennett_on_our_consciousness", {"mode": "audio"}),
    ("hls (mux test stream)", "https://test-streams.mux.dev/x36xhzz/x36xhzz.m3u8",
     {"mode": "audio"}),
]  # fmt: skip
DEADLINE_SECONDS = 300


async def _run_one(
    client: httpx.AsyncClient, name: str, url: str, options: dict[str, Any]
) -> tuple[str, str, str]:
    started = time.monotonic()
    submitted = await client.post("/v1/tasks", json={"url": url, **options})
    if submitted.status_code != 202:
        return name, "refused", f"{submitted.status_code} {submitted.text[:120]}"
    task = submitted.json()["task"]
    while task["status"] not in ("succeeded", "failed", "canceled"):
        if time.monotonic() - started > DEADLINE_SECONDS:
            return name, "timeout", f"still {task['status']} after {DEADLINE_SECONDS} s"
        await asyncio.sleep(2)
        task = (await client.get(f"/v1/tasks/{task['id']}")).json()["task"]
    seconds = f"{time.monotonic() - started:.0f} s"
    if task["status"] == "succeeded":
        result = task["result"]
        return name, "works", f"{result['filename']} ({result['size']} bytes, {seconds})"
    error = task["error"] or {}
    return name, "FAILS", f"{error.get('code')}: {error.get('message')} ({seconds})"


async def main() -> int:
    base_url = os.environ.get("MEDIAFLOW_URL", "http://127.0.0.1:8080")
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        signed_up = await client.post(
            "/v1/auth/sign-up",
            json={
                "email": f"canary-{secrets.token_hex(4)}@example.com",
                "password": secrets.token_urlsafe(16),
            },
        )
        if signed_up.status_code != 201:
            sys.stderr.write(f"cannot sign up at {base_url}: {signed_up.status_code}\n")
            return 2
        rows = await asyncio.gather(*(_run_one(client, *link) for link in LINKS))
    width = max(len(name) for name, _, _ in rows)
    for name, outcome, detail in rows:
        sys.stdout.write(f"{name:<{width}}  {outcome:<7}  {detail}\n")
    return 0 if all(outcome == "works" for _, outcome, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
