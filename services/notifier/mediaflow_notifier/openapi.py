"""The OpenAPI description of the notifier's public route, ``GET /v1/events`` (API.md,
"Events"), for the document the gateway publishes at ``/v1/openapi.json``. Written from the
contract: the route is a bare ASGI handler, which Litestar does not describe."""

from __future__ import annotations

from typing import Any

from mediaflow_libs.openapi import SECURITY, SHARED_SCHEMAS, problem, problems, security_schemes

EVENT_STREAM = "text/event-stream"

# One event of the stream, as a client's parser sees it (`data` is the task's JSON).
_TASK_EVENT: dict[str, Any] = {
    "title": "TaskEvent",
    "type": "object",
    "required": ["event", "id", "data"],
    "properties": {
        "event": {"const": "task"},
        "id": {
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "The cursor to resume from (`Last-Event-ID`)",
        },
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/Task"},
        },
    },
}


def document(session_cookie: str) -> dict[str, Any]:
    """The notifier's route, with the schemas and security schemes it refers to. The
    ``Task`` schema it names is the gateway's (the same task JSON)."""
    get_events = {
        "operationId": "EventsStream",
        "summary": "Live events of the caller's tasks (Server-Sent Events)",
        "description": (
            "On connect: `retry: <ms>`, then one `task` event with each task's current "
            "snapshot (each non-terminal task when unfiltered), then live events; a `: ping` "
            "comment at least every 15 s. With `Last-Event-ID`, every status change missed "
            "since that cursor instead of snapshots (snapshots when it is too old or unknown)."
        ),
        "tags": ["events"],
        "security": SECURITY,
        "parameters": [
            {
                "name": "task",
                "in": "query",
                "required": False,
                "description": "Narrow the stream to these tasks (repeatable)",
                "style": "form",
                "explode": True,
                "schema": {"type": "array", "items": {"type": "string", "format": "uuid"}},
            },
            {
                "name": "last_event_id",
                "in": "query",
                "required": False,
                "description": "Resume after this cursor (the header wins when both are sent)",
                "schema": {"type": "string"},
            },
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "description": "Resume after this cursor (what a browser sends on reconnect)",
                "schema": {"type": "string"},
            },
        ],
        "responses": {
            "200": {
                "description": "The stream: `task` events whose data is the task's JSON",
                "headers": {
                    "X-Accel-Buffering": {
                        "description": "Tells a proxy not to buffer the stream",
                        "required": True,
                        "schema": {"const": "no"},
                    },
                    "Cache-Control": {"required": True, "schema": {"const": "no-cache"}},
                },
                "content": {EVENT_STREAM: {"schema": _TASK_EVENT}},
            },
            # 400 and 503 can also come from the ingress (unreadable request, notifier down).
            **problems(400, 401),
            "422": problem(422, "A `task` that is not a task id (invalid_task_id)"),
            "429": problem(429, "Too many open streams for this user (too_many_streams)"),
            "503": problem(
                503, "auth_unavailable, or live events unavailable here (events_unavailable)"
            ),
        },
    }
    return {
        "paths": {"/v1/events": {"get": get_events}},
        "components": {
            "schemas": dict(SHARED_SCHEMAS),
            "securitySchemes": security_schemes(session_cookie),
        },
    }
