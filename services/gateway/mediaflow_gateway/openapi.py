"""The published OpenAPI document: Litestar's, generated from the route declarations, plus
what those declarations cannot say (API.md is the reference for each addition)."""

from __future__ import annotations

import copy
from typing import Any

RETRY_AFTER = {
    "description": "Seconds to wait before trying again",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}


def completed(schema: dict[str, Any], session_cookie: str) -> dict[str, Any]:
    """``schema`` with the credentials it accepts, ``Retry-After`` on every 429 and 503, and
    the conditional GET of a task (``If-None-Match`` → 304)."""
    schema = copy.deepcopy(schema)
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(
        {
            "session": {
                "type": "apiKey",
                "in": "cookie",
                "name": session_cookie,
                "description": "The session cookie that sign-in sets",
            },
            "apiKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key (`Authorization: Bearer mfk_…`)",
            },
        }
    )
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            responses = operation.get("responses", {}) if isinstance(operation, dict) else {}
            for status in ("429", "503"):
                if status in responses:
                    responses[status].setdefault("headers", {})["Retry-After"] = RETRY_AFTER
            if "401" in responses:
                operation["security"] = [{"session": []}, {"apiKey": []}]
    get_task = schema["paths"]["/v1/tasks/{task_id}"]["get"]
    get_task.setdefault("parameters", []).append(
        {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "description": "ETags of copies you hold (or `*`): 304 when one is current",
            "schema": {"type": "string"},
        }
    )
    get_task["responses"]["304"] = {
        "description": "Not modified: the copy you hold is current",
        "headers": {"ETag": get_task["responses"]["200"]["headers"]["ETag"]},
    }
    return schema
