"""The HTTP side of the CLI: one saved session, calls through the public origin, a task
followed live over SSE (polling when the stream is unavailable), a result downloaded."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from httpx_sse import EventSource, SSEError

TERMINAL = frozenset({"succeeded", "failed", "canceled"})
DEFAULT_URL = "http://127.0.0.1:8080"
# Consecutive stream failures after which a task is polled instead.
STREAM_ATTEMPTS = 3


class CorruptDownload(Exception):
    """The downloaded bytes are not the stored file's (their SHA-256 differs)."""


class ApiError(Exception):
    """A problem+json answer (or anything else an HTTP error carried)."""

    def __init__(self, response: httpx.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        self.status = response.status_code
        self.code = str(body.get("code") or "http_error")
        self.detail = str(body.get("detail") or response.reason_phrase or "")
        self.retry_after = response.headers.get("retry-after")
        super().__init__(f"{self.status} {self.code}: {self.detail}")


def config_path() -> Path:
    explicit = os.environ.get("MEDIAFLOW_CONFIG")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "mediaflow" / "session.json"


def save_session(base_url: str, token: str) -> None:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created owner-only before the token is written into it.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(file.fileno(), 0o600)
        json.dump({"url": base_url, "token": token}, file)


def load_session() -> dict[str, str]:
    try:
        data = json.loads(config_path().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {key: value for key, value in data.items() if isinstance(value, str)}


def forget_session() -> bool:
    try:
        config_path().unlink()
    except FileNotFoundError:
        return False
    return True


def resolve(url: str | None) -> tuple[str, dict[str, str]]:
    """The origin to talk to and the credential headers for it: MEDIAFLOW_API_KEY, else the
    saved session, which is only ever sent to the origin it was issued by."""
    session = load_session()
    base_url = (url or os.environ.get("MEDIAFLOW_URL") or session.get("url") or DEFAULT_URL).rstrip(
        "/"
    )
    api_key = os.environ.get("MEDIAFLOW_API_KEY")
    if api_key:
        return base_url, {"authorization": f"Bearer {api_key}"}
    if session.get("token") and session.get("url", "").rstrip("/") == base_url:
        return base_url, {"cookie": f"mf_session={session['token']}"}
    return base_url, {}


def api_for(url: str | None) -> Api:
    """A client of the origin :func:`resolve` picks for ``url``, with its credential."""
    return Api(*resolve(url))


@dataclass
class Saved:
    path: Path
    size: int
    sha256: str


class Api:
    # Until the stream's `retry:` says otherwise.
    reconnect_seconds = 1.0
    poll_seconds = 1.0

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # No Origin header: this is no browser page, and the cross-site check lets a client that
        # names no origin through, whatever spelling of the address it was given.
        self.http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers or {}, timeout=30, transport=transport
        )

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiError(response)
        return response

    async def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return dict((await self.call(method, path, **kwargs)).json())

    async def authenticate(
        self, action: str, email: str, password: str, name: str | None = None
    ) -> dict[str, Any]:
        body = {"email": email, "password": password} | ({"name": name} if name else {})
        response = await self.call("POST", f"/v1/auth/{action}", json=body)
        token = response.cookies.get("mf_session")
        if not token:
            raise RuntimeError("the server set no mf_session cookie")
        save_session(self.base_url, token)
        return dict(response.json())

    async def task(self, task_id: str) -> dict[str, Any]:
        return dict((await self.json("GET", f"/v1/tasks/{task_id}"))["task"])

    async def follow(self, task_id: str) -> AsyncIterator[dict[str, Any]]:
        """Each state of the task until it is terminal: its current state first, then live
        from the event stream (resumed with Last-Event-ID after a dropped connection), or by
        polling when the stream keeps failing (a proxy that refuses it, say)."""
        task = await self.task(task_id)  # an unknown id is a 404 here, not a silent stream
        yield task
        if task["status"] in TERMINAL:
            return
        last_event_id: str | None = None
        failures = 0
        delay = self.reconnect_seconds
        while failures < STREAM_ATTEMPTS:
            headers = {"last-event-id": last_event_id} if last_event_id else {}
            try:
                async for event_id, retry_ms, state in self._stream(task_id, headers):
                    failures = 0
                    last_event_id = event_id or last_event_id
                    if retry_ms is not None:
                        delay = retry_ms / 1000
                    if state is None:
                        continue
                    task = state
                    yield task
                    if task["status"] in TERMINAL:
                        return
            except ApiError as exc:
                if exc.status in (401, 403):
                    raise
                failures += 1
            except (httpx.TransportError, SSEError):
                failures += 1
            # Between attempts the task is read once, so that a refused or broken stream
            # costs no progress and a task that ended meanwhile is seen at once.
            if failures:
                state = await self.task(task_id)
                if state != task:
                    task = state
                    yield task
                    if task["status"] in TERMINAL:
                        return
            await asyncio.sleep(min(delay, 5.0))
        async for polled in self._poll(task):
            yield polled

    async def _stream(
        self, task_id: str, headers: dict[str, str]
    ) -> AsyncIterator[tuple[str, int | None, dict[str, Any] | None]]:
        """(event id, retry, task or None) for each event of one connection."""
        async with self.http.stream(
            "GET",
            "/v1/events",
            params={"task": task_id},
            headers={"accept": "text/event-stream", "cache-control": "no-store"} | headers,
            # Pings come at least every 15 s: a minute of silence is a dead connection.
            timeout=httpx.Timeout(30, read=60),
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                raise ApiError(response)
            async for event in EventSource(response).aiter_sse():
                task = None
                if event.event == "task":
                    try:
                        data = event.json()
                    except ValueError:
                        data = None  # not this client's to judge: the next state comes anyway
                    if isinstance(data, dict) and data.get("id") == task_id:
                        task = data
                yield event.id, event.retry, task

    async def _poll(self, last: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Each new state of the task after ``last``, read with If-None-Match."""
        etag = ""
        while True:
            await asyncio.sleep(self.poll_seconds)
            response = await self.call(
                "GET", f"/v1/tasks/{last['id']}", headers={"if-none-match": etag} if etag else {}
            )
            if response.status_code == 304:
                continue
            etag = response.headers.get("etag", "")
            task: dict[str, Any] = response.json()["task"]
            if task == last:
                continue
            last = task
            yield task
            if task["status"] in TERMINAL:
                return

    async def download_url(self, task_id: str) -> str:
        response = await self.http.get(f"/v1/tasks/{task_id}/download", follow_redirects=False)
        if response.status_code != 302:
            raise ApiError(response)
        return response.headers["location"]

    async def save(
        self,
        task: dict[str, Any],
        destination: Path | None,
        on_progress: Callable[[int, int | None], None],
    ) -> Saved:
        """Downloads the task's file and checks it against the task's SHA-256. It is written to
        a temporary file beside the destination and renamed only once it verifies, so nothing
        partial or wrong is ever left under the real name. ``None`` writes it to stdout."""
        url = await self.download_url(task["id"])
        expected = task["result"]["sha256"]
        digest = hashlib.sha256()
        size = 0
        partial = (
            None if destination is None else destination.with_name(f".{destination.name}.part")
        )
        # A client of its own: the session's credentials are never sent to the storage host.
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(30, read=60)) as storage,
            storage.stream("GET", url) as response,
        ):
            if response.status_code >= 400:
                await response.aread()
                raise ApiError(response)
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
            sink = _open_sink(partial)
            try:
                with sink:
                    async for block in response.aiter_bytes():
                        sink.write(block)
                        digest.update(block)
                        size += len(block)
                        on_progress(size, total)
                if digest.hexdigest() != expected:
                    raise CorruptDownload(
                        f"the download's SHA-256 {digest.hexdigest()} is not the task's {expected}"
                    )
                if partial is not None and destination is not None:
                    partial.replace(destination)
            finally:
                if partial is not None:
                    partial.unlink(missing_ok=True)
        return Saved(path=destination or Path("-"), size=size, sha256=digest.hexdigest())


def _open_sink(path: Path | None) -> BinaryIO:
    """A file to write to, or stdout's descriptor (its own copy, so closing it leaves stdout
    open). Local writes are quick enough to make from the event loop."""
    if path is None:
        return os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    return path.open("wb")
