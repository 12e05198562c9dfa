"""A task as API.md shows it: one type, which the published schema describes, built straight
from the task's row (what the routes, the stream's snapshots and the event snapshots show),
or from its message (the live events the notifier relays)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, TypedDict, cast

from google.protobuf.timestamp_pb2 import Timestamp

from mediaflow_libs import contracts
from mediaflow_libs.tasks import (
    MEDIA_FIELDS,
    SUCCEEDED,
    json_object,
    result_content_type,
    result_filename,
    stored_options,
)


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


def rfc3339(value: datetime) -> str:
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return utc.isoformat().replace("+00:00", "Z")


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
        "content_type": result_content_type(row),
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


def _stamp(stamp: Timestamp) -> str:
    return rfc3339(stamp.ToDatetime(tzinfo=UTC))


def _message_result(result: contracts.TaskResult) -> TaskResult:
    media = {
        name: getattr(result.media, name) if result.media.HasField(name) else None
        for name in MEDIA_FIELDS
    }
    return {
        "size": result.size,
        "sha256": result.sha256,
        "content_type": result.content_type,
        "filename": result.filename,
        "media": cast(TaskMedia, media),
        "expires_at": _stamp(result.expires_at) if result.HasField("expires_at") else None,
    }


def message_view(task: contracts.Task) -> Task:
    """A ``Task`` message as API.md shows it: what :func:`task_view` shows of its row."""
    options = task.options
    return {
        "id": task.id,
        "status": cast(Any, task.status),
        "progress": task.progress if task.HasField("progress") else None,
        "bytes_done": task.bytes_done,
        "bytes_total": task.bytes_total if task.HasField("bytes_total") else None,
        "source_url": task.source_url,
        "attempt": task.attempt,
        "error": {"code": task.error.code, "message": task.error.message}
        if task.HasField("error")
        else None,
        "options": cast(
            TaskOptions,
            {
                "quality": int(options.quality)
                if options.quality.isdigit()
                else options.quality or "best",
                "mode": options.mode or "auto",
                "audio_format": options.audio_format or "original",
            },
        ),
        "result": _message_result(task.result) if task.HasField("result") else None,
        "created_at": _stamp(task.created_at),
        "updated_at": _stamp(task.updated_at),
    }
