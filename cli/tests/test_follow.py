"""How the CLI follows a task, against a scripted server (httpx's mock transport): resuming a
dropped stream where it stopped, and polling when the stream cannot be had."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from mediaflow_cli.client import Api, ApiError

TASK_ID = "7c1db25f-0000-4000-8000-000000000001"


def _task(status: str, progress: int | None = None) -> dict[str, Any]:
    return {"id": TASK_ID, "status": status, "progress": progress}


def _event(cursor: str, task: dict[str, Any]) -> bytes:
    return f"id: {cursor}\nevent: task\ndata: {json.dumps(task)}\n\n".encode()


def _stream(*chunks: bytes, then_drop: bool = False) -> httpx.Response:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk
        if then_drop:
            raise httpx.ReadError("connection reset")

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


def _api(handler: Callable[[httpx.Request], httpx.Response]) -> Api:
    api = Api("http://mediaflow.test", transport=httpx.MockTransport(handler))
    api.reconnect_seconds = api.poll_seconds = 0.01
    return api


async def _statuses(api: Api) -> list[str]:
    async with api:
        return [task["status"] for task in [t async for t in api.follow(TASK_ID)]]


async def test_a_dropped_stream_resumes_from_the_last_event_id() -> None:
    resumed_with: list[str | None] = []
    # Read before the stream, and once after it dropped (the state the stream last sent).
    reads = iter([_task("queued"), _task("running", 50)])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/v1/tasks/{TASK_ID}":
            return httpx.Response(200, json={"task": next(reads)})
        resumed_with.append(request.headers.get("last-event-id"))
        if len(resumed_with) == 1:
            return _stream(
                b"retry: 10\n\n",
                _event("c1", _task("running", 10)),
                b": ping\n\n",
                _event("c2", _task("running", 50)),
                then_drop=True,
            )
        if len(resumed_with) == 2:
            # Closed cleanly after one event: the next connection resumes after it, too.
            return _stream(_event("c3", _task("running", 90)))
        return _stream(_event("c4", _task("succeeded", 100)))

    assert await _statuses(_api(handler)) == [
        "queued",
        "running",
        "running",
        "running",
        "succeeded",
    ]
    assert resumed_with == [None, "c2", "c3"]


async def test_a_refused_stream_falls_back_to_polling_with_etags() -> None:
    streams = 0
    reads: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal streams
        if request.url.path == "/v1/events":
            streams += 1
            return httpx.Response(503, text="<html>blocked by a proxy</html>")
        reads.append(request.headers.get("if-none-match"))
        if len(reads) < 8:
            if reads[-1] == '"e1"':
                return httpx.Response(304, headers={"etag": '"e1"'})
            return httpx.Response(200, headers={"etag": '"e1"'}, json={"task": _task("running")})
        return httpx.Response(200, headers={"etag": '"e2"'}, json={"task": _task("succeeded")})

    # The same state read again is not reported again.
    assert await _statuses(_api(handler)) == ["running", "succeeded"]
    assert streams == 3
    # Once polling, each read after the first sends the last ETag (and gets 304s).
    assert reads == [None, None, None, None, None, '"e1"', '"e1"', '"e1"']


async def test_a_stream_that_is_not_sse_falls_back_to_polling() -> None:
    states = iter(["running", "failed"])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/events":
            return httpx.Response(200, headers={"content-type": "text/html"}, text="<p>portal</p>")
        return httpx.Response(200, json={"task": _task(next(states))})

    assert await _statuses(_api(handler)) == ["running", "failed"]


async def test_an_unknown_task_is_an_error_before_any_stream() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(
            404,
            headers={"content-type": "application/problem+json"},
            json={"status": 404, "code": "task_not_found", "detail": "No such task."},
        )

    with pytest.raises(ApiError) as raised:
        await _statuses(_api(handler))
    assert (raised.value.status, raised.value.code) == (404, "task_not_found")
    assert paths == [f"/v1/tasks/{TASK_ID}"]


async def test_a_revoked_session_on_the_stream_is_not_retried() -> None:
    streams = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal streams
        if request.url.path == "/v1/events":
            streams += 1
            return httpx.Response(
                401, json={"status": 401, "code": "session_revoked", "detail": "Signed out."}
            )
        return httpx.Response(200, json={"task": _task("running")})

    with pytest.raises(ApiError) as raised:
        await _statuses(_api(handler))
    assert raised.value.code == "session_revoked"
    assert streams == 1
