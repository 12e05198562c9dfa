"""A task as API.md shows it: one type, which the published schema describes, built straight
from the task's row (what the routes and the event snapshots show)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict, cast

from mediaflow_libs import naming

SUCCEEDED = "succeeded"
DEFAULT_OPTIONS: dict[str, str] = {"quality": "best", "mode": "auto", "audio_format": "original"}
MEDIA_FIELDS = ("title", "duration_seconds", "width", "height", "video_codec", "audio_codec")


class TaskError(TypedDict):
    code: str
    message: str


class TaskMedia(TypedDict):
    title: str | None
    duration_seconds: float | None
    width: int | None
    height: int | None
    video_codec: str | None
    audio_codec: str | None


class TaskResult(TypedDict):
    size: int
    sha256: str
    content_type: str
    filename: str
    media: TaskMedia
    expires_at: str | None


class TaskOptions(TypedDict):
    quality: int | Literal["best"]
    mode: Literal["auto", "audio", "mute"]
    audio_format: Literal["original", "mp3", "opus"]


class Task(TypedDict):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "canceled"]
    progress: int | None
    bytes_done: int
    bytes_total: int | None
    source_url: str
    attempt: int
    options: TaskOptions
    error: TaskError | None
    result: TaskResult | None
    created_at: str
    updated_at: str


def json_object(value: Any) -> dict[str, Any]:
    """A jsonb column's object, decoded or not by the connection's codec."""
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


def stored_options(value: Any) -> dict[str, str]:
    """A task's options as stored (null for a task from before options), defaults filled in."""
    found = json_object(value)
    return {name: str(found.get(name) or default) for name, default in DEFAULT_OPTIONS.items()}


def rfc3339(value: datetime) -> str:
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return utc.isoformat().replace("+00:00", "Z")


def result_filename(row: Any) -> str:
    """The stored file's name; results stored before file names were are named after the URL."""
    content_type = row["result_content_type"] or "application/octet-stream"
    return row.get("result_filename") or naming.filename(None, row["source_url"], content_type)


def _options(row: Any) -> TaskOptions:
    options = stored_options(row.get("options"))
    quality = options["quality"]
    return cast(TaskOptions, options | {"quality": int(quality) if quality.isdigit() else quality})


def _result(row: Any) -> TaskResult | None:
    if row["status"] != SUCCEEDED or row["result_sha256"] is None:
        return None
    media = {name: json_object(row.get("result_media")).get(name) for name in MEDIA_FIELDS}
    if media["duration_seconds"] is not None:
        media["duration_seconds"] = float(media["duration_seconds"])  # a number of seconds
    expires_at = row.get("result_expires_at")
    return {
        "size": row["result_size"],
        "sha256": row["result_sha256"],
        "content_type": row["result_content_type"] or "application/octet-stream",
        "filename": result_filename(row),
        "media": cast(TaskMedia, media),
        "expires_at": rfc3339(expires_at) if expires_at is not None else None,
    }


def task_view(row: Any) -> Task:
    """A task row (a ``media.tasks`` record, or a mapping of its columns) as API.md shows it."""
    error: TaskError | None = None
    if row["error_code"] is not None:
        error = {"code": row["error_code"], "message": row["error_message"] or ""}
    return {
        "id": str(row["id"]),
        "status": row["status"],
        "progress": row["progress"],
        "bytes_done": row["bytes_done"],
        "bytes_total": row["bytes_total"],
        "source_url": row["source_url"],
        "attempt": row["attempt"],
        "error": error,
        "options": _options(row),
        "result": _result(row),
        "created_at": rfc3339(row["created_at"]),
        "updated_at": rfc3339(row["updated_at"]),
    }
