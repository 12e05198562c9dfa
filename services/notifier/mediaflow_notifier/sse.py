"""``GET /v1/events``: the caller's task events as Server-Sent Events (API.md, "Events").

A stream subscribes to live events *before* it reads the database, so nothing
committed in between is missed; whatever arrives both ways is sent once, because
an event is skipped when its id is not above the last one sent for its task.

Open streams are what a replica holds most of, so each costs as little memory as it
can (``bench/sse_bench.py``): the route is a bare ASGI handler, so no request or
response object lives as long as the stream, and an idle stream is only its
connection's task waiting in ``receive()``, which returns when the client hangs up or
the response has been ended. Frames after the catch-up are written by a short-lived
writer task, started when the stream has something to send: live events, a heartbeat
(one task pings every stream of the process), or its end.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import structlog
from litestar import Request, asgi
from litestar.types import HTTPResponseBodyEvent, HTTPScope, Receive, Scope, Send

from mediaflow_libs.contracts import TaskEvent
from mediaflow_libs.credentials import credential_digest, presented_credential
from mediaflow_libs.problems import ProblemError
from mediaflow_libs.session_client import require_identity
from mediaflow_libs.task_view import message_view, task_view
from mediaflow_notifier import queries
from mediaflow_notifier.fanout import Subscriber
from mediaflow_notifier.metrics import (
    CONNECTED_CLIENTS,
    DELIVERY_LAG,
    DISCONNECTS,
    EVENTS_DELIVERED,
)
from mediaflow_notifier.resources import Resources, resources_of

log = structlog.get_logger(__name__)

REPLAY_PAGE_SIZE = 500
UNAVAILABLE_RETRY_AFTER_SECONDS = 2
_CURSOR = re.compile(r"^[0-9]{1,18}$")  # a positive bigint, never past its range
_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_END: HTTPResponseBodyEvent = {"type": "http.response.body", "body": b"", "more_body": False}
_DELIVERED = {kind: EVENTS_DELIVERED.labels(kind) for kind in ("snapshot", "replay", "live")}


def _task_filter(request: Request[Any, Any, Any]) -> frozenset[str] | None:
    values = request.query_params.getall("task", [])
    if not values:
        return None
    try:
        return frozenset(str(uuid.UUID(value)) for value in values)
    except ValueError as exc:
        raise ProblemError(
            422, "invalid_task_id", "Every `task` must be a task id (a UUID)."
        ) from exc


def _cursor(request: Request[Any, Any, Any]) -> int | None:
    # The header wins: a browser reconnecting sends its latest id there, while the
    # query parameter keeps the value the page was opened with.
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or ""
    return int(raw.strip()) or None if _CURSOR.match(raw.strip()) else None


@asgi("/v1/events", is_mount=False, copy_scope=False)
async def events(scope: Scope, receive: Receive, send: Send) -> None:
    # Litestar caches what it parses (headers, cookies, query) in the scope's state, which
    # lives as long as the connection: parse with a state that is dropped once set up.
    stream = await _open(Request(cast("HTTPScope", {**scope, "state": {}})))
    await stream.run(receive, send)


async def _open(request: Request[Any, Any, Any]) -> EventStream:
    """Check the request (errors become problem responses: nothing is sent yet)."""
    if request.method != "GET":
        raise ProblemError(
            405, "method_not_allowed", "Only GET is allowed here.", headers={"Allow": "GET"}
        )
    resources = resources_of(request.app.state)
    settings = resources.settings
    identity = await require_identity(request, resources.sessions, settings.public_url)
    task_ids = _task_filter(request)
    if not resources.fanout.ready:
        raise ProblemError(
            503,
            "events_unavailable",
            "Live events are unavailable on this server right now; try again shortly.",
            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)},
        )
    if resources.streams_per_user[identity.user_id] >= settings.sse_max_streams_per_user:
        raise ProblemError(
            429,
            "too_many_streams",
            f"At most {settings.sse_max_streams_per_user} event streams per user at once; "
            "close one (one stream carries every task).",
            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)},
        )
    credential = presented_credential(request, settings.public_url)
    digest = credential_digest(credential) if credential else None
    return EventStream(resources, identity.user_id, task_ids, _cursor(request), digest)


class EventStream:
    """One client's stream: ``retry``, then snapshots or a replay, then live events."""

    __slots__ = (
        "_credential_digest",
        "_cursor",
        "_delivered_count",
        "_ended",
        "_last_sent",
        "_ping_due",
        "_resources",
        "_send",
        "_subscriber",
        "_task_ids",
        "_user_id",
        "_writer",
    )

    def __init__(
        self,
        resources: Resources,
        user_id: str,
        task_ids: frozenset[str] | None,
        cursor: int | None,
        credential_digest: str | None = None,
    ) -> None:
        self._resources = resources
        self._user_id = user_id
        self._task_ids = task_ids
        self._cursor = cursor
        self._credential_digest = credential_digest
        self._last_sent: dict[str, int] = {}  # task id -> id of the last event sent for it
        self._delivered_count = 0
        self._send: Send | None = None
        self._subscriber: Subscriber | None = None
        self._writer: asyncio.Task[None] | None = None
        self._ping_due = False
        self._ended = False
        # Counted from here (no await since the limit was checked) until run() ends.
        resources.streams_per_user[user_id] += 1

    async def run(self, receive: Receive, send: Send) -> None:
        """Serve the stream until the client hangs up or the stream is ended."""
        settings = self._resources.settings
        fanout = self._resources.fanout
        self._send = send
        CONNECTED_CLIENTS.inc()
        started = time.monotonic()
        reason = "client"
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _STREAM_HEADERS})
            await self._write(f"retry: {settings.sse_retry_ms}\n\n")
            subscriber = self._subscriber = await fanout.subscribe(
                self._user_id, self._task_ids, self._credential_digest
            )
            if subscriber.closed_reason is None:
                async for frame, kind in self._catch_up():
                    await self._write(frame)
                    self._count_delivered(kind)
            # Live from here on: a writer task sends what comes, this task awaits the end.
            subscriber.on_change = self._start_writer
            self._resources.heartbeat.add(self)
            self._start_writer()  # events that came during the catch-up, or the end
            while (await receive())["type"] != "http.disconnect":
                pass  # the (empty) request body
        except Exception:
            reason = "error"
            log.exception("sse.stream_failed")
            await self._end()
        finally:
            # No awaits here: this also runs when the request is being cancelled.
            self._stop_writing()
            if self._subscriber is not None:
                fanout.unsubscribe(self._subscriber)
                if reason != "error" and self._subscriber.closed_reason is not None:
                    reason = self._subscriber.closed_reason
            open_streams = self._resources.streams_per_user
            open_streams[self._user_id] -= 1
            if open_streams[self._user_id] <= 0:
                del open_streams[self._user_id]
            CONNECTED_CLIENTS.dec()
            DISCONNECTS.labels(reason).inc()
            log.info(
                "sse.stream_ended",
                reason=reason,
                events=self._delivered_count,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )

    async def _catch_up(self) -> AsyncIterator[tuple[str, str]]:
        pool = self._resources.pool
        cursor = self._cursor
        if cursor is not None and await queries.is_known_cursor(pool, self._user_id, cursor):
            while True:
                rows = await queries.events_after(
                    pool, self._user_id, self._task_ids, cursor, REPLAY_PAGE_SIZE
                )
                for row in rows:
                    yield self._frame(row["id"], str(row["task_id"]), row["task"]), "replay"
                if len(rows) < REPLAY_PAGE_SIZE:
                    return
                cursor = rows[-1]["id"]
        # First connect, or a cursor that is unknown, too old or another user's.
        if self._task_ids is None:
            rows = await queries.active_task_snapshots(pool, self._user_id)
        else:
            rows = await queries.named_task_snapshots(pool, self._user_id, self._task_ids)
        for row in rows:
            task = task_view(row)
            yield self._frame(row["event_id"], str(row["id"]), task), "snapshot"

    def ping(self) -> None:
        self._ping_due = True
        self._start_writer()

    def _start_writer(self) -> None:
        if self._writer is None and not self._ended:
            self._writer = asyncio.get_running_loop().create_task(self._write_pending())

    async def _write_pending(self) -> None:
        """Write what is waiting (events, a ping) until nothing is; end a closed stream."""
        subscriber = self._subscriber
        assert subscriber is not None
        try:
            while True:
                if subscriber.closed_reason is not None:
                    await self._end()  # the client's receive() returns: run() finishes
                    return
                sent: list[TaskEvent] = []
                frames: list[str] = []
                for event in subscriber.take():
                    if event.event_id <= self._last_sent.get(event.task.id, 0):
                        continue  # already sent by the snapshot or replay
                    frames.append(
                        self._frame(event.event_id, event.task.id, message_view(event.task))
                    )
                    sent.append(event)
                if self._ping_due:
                    self._ping_due = False
                    frames.append(": ping\n\n")
                if not frames:
                    return
                await self._write("".join(frames))
                # The send returns once the bytes were handed to the socket: that is the
                # moment delivery lag is measured to.
                now = time.time()
                for event in sent:
                    self._count_delivered("live")
                    DELIVERY_LAG.observe(max(0.0, now - _seconds(event)))
        except Exception:
            log.exception("sse.write_failed")
            subscriber.close("error")
            await self._end()
        finally:
            self._writer = None

    async def _write(self, text: str) -> None:
        assert self._send is not None
        await self._send({"type": "http.response.body", "body": text.encode(), "more_body": True})

    async def _end(self) -> None:
        if not self._ended and self._send is not None:
            self._ended = True
            await self._send(_END)

    def _stop_writing(self) -> None:
        self._resources.heartbeat.discard(self)
        if self._writer is not None:
            self._writer.cancel()  # the client is gone: nothing more reaches it
        if self._subscriber is not None:
            self._subscriber.on_change = None

    def _count_delivered(self, kind: str) -> None:
        self._delivered_count += 1
        _DELIVERED[kind].inc()

    def _frame(self, event_id: int | None, task_id: str, task: Mapping[str, object]) -> str:
        data = json.dumps(task, separators=(",", ":"))  # one line: JSON escapes newlines
        if event_id is None:
            # A task without any stored event: without an id line the client keeps its cursor.
            return f"event: task\ndata: {data}\n\n"
        self._last_sent[task_id] = event_id
        return f"id: {event_id}\nevent: task\ndata: {data}\n\n"


def _seconds(event: TaskEvent) -> float:
    stamp = event.task.updated_at
    return float(stamp.seconds + stamp.nanos / 1e9)
