"""The HTTP side of the CLI: one session per config file, calls through the public origin."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from mediaflow_cli.sse import SseEvent, read_events

TERMINAL = frozenset({"succeeded", "failed", "canceled"})


class ApiError(Exception):
    def __init__(self, response: httpx.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = {}
        self.status = response.status_code
        self.code = body.get("code", "http_error")
        self.detail = body.get("detail", response.text[:200])
        super().__init__(f"{self.status} {self.code}: {self.detail}")


def config_path() -> Path:
    explicit = os.environ.get("MEDIAFLOW_CONFIG")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "mediaflow" / "session.json"


def save_session(base_url: str, token: str) -> None:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(json.dumps({"url": base_url, "token": token}))


def load_session() -> dict[str, str] | None:
    try:
        data = json.loads(config_path().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


class Api:
    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        # No Origin: this is no browser page, and the cross-site check lets a client that names
        # no origin through, whatever spelling of the address (--url) it was given.
        headers: dict[str, str] = {}
        if token:
            headers["cookie"] = f"mf_session={token}"
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30)

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiError(response)
        return response

    async def authenticate(self, action: str, email: str, password: str) -> dict[str, Any]:
        response = await self.call(
            "POST", f"/v1/auth/{action}", json={"email": email, "password": password}
        )
        token = response.cookies.get("mf_session")
        if not token:
            raise RuntimeError("the server set no mf_session cookie")
        save_session(self.base_url, token)
        return dict(response.json())

    async def follow(self, task_id: str) -> AsyncIterator[dict[str, Any]]:
        """Each state of the task from the event stream, resuming after a dropped connection,
        until it is terminal."""
        last_event_id: str | None = None
        failures = 0
        while True:
            headers = {"accept": "text/event-stream"}
            if last_event_id:
                headers["last-event-id"] = last_event_id
            try:
                async with self.http.stream(
                    "GET",
                    "/v1/events",
                    params={"task": task_id},
                    headers=headers,
                    timeout=httpx.Timeout(30, read=60),
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise ApiError(response)
                    failures = 0
                    async for item in read_events(response):
                        if not isinstance(item, SseEvent) or item.event != "task":
                            continue
                        last_event_id = item.id or last_event_id
                        task = json.loads(item.data)
                        if task["id"] != task_id:
                            continue
                        yield task
                        if task["status"] in TERMINAL:
                            return
            except (httpx.TransportError, ApiError) as exc:
                failures += 1
                if (isinstance(exc, ApiError) and exc.status < 500) or failures > 5:
                    raise
                await asyncio.sleep(min(2**failures * 0.25, 5))
