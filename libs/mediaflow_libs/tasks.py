"""A task: its statuses and options, where its objects are stored, and its message: the
``Task`` built from its row, and from the event snapshot read back (the JSON API.md shows is
:mod:`mediaflow_libs.task_view`'s).
Its status changes are :mod:`mediaflow_libs.task_transitions`'s.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from mediaflow_libs import naming
from mediaflow_libs.contracts import Task, TaskError, TaskEvent, TaskMedia, TaskOptions, TaskResult

QUEUED, RUNNING, SUCCEEDED = "queued", "running", "succeeded"
FAILED, CANCELED = "failed", "canceled"
TERMINAL_STATUSES = frozenset({SUCCEEDED, FAILED, CANCELED})

# API.md's options and their defaults; `quality` is "best" or one of these heights.
DEFAULT_OPTIONS: dict[str, str] = {"quality": "best", "mode": "auto", "audio_format": "original"}
QUALITY_HEIGHTS = (2160, 1440, 1080, 720, 480, 360, 240, 144)
OPTION_VALUES: dict[str, tuple[str, ...]] = {
    "quality": ("best", *(str(h) for h in QUALITY_HEIGHTS)),
    "mode": ("auto", "audio", "mute"),
    "audio_format": ("original", "mp3", "opus"),
}
MEDIA_FIELDS = ("title", "duration_seconds", "width", "height", "video_codec", "audio_codec")


def object_prefix(user_id: str, task_id: str) -> str:
    """Where every object of a task is stored: one per attempt, under this prefix."""
    return f"tasks/{user_id}/{task_id}/"


def object_key(user_id: str, task_id: str, attempt: int) -> str:
    return f"{object_prefix(user_id, task_id)}{attempt}"


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def stored_options(value: Any) -> dict[str, str]:
    """A task's options as stored (null for a task from before options), defaults filled in."""
    found = json_object(value)
    return {name: str(found.get(name) or default) for name, default in DEFAULT_OPTIONS.items()}


def json_object(value: Any) -> dict[str, Any]:
    """A jsonb column's object, decoded or not by the connection's codec."""
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


def result_content_type(row: Any) -> str:
    return row["result_content_type"] or "application/octet-stream"


def result_filename(row: Any) -> str:
    """The stored file's name; results stored before file names were are named after the URL."""
    return row.get("result_filename") or naming.filename(
        None, row["source_url"], result_content_type(row)
    )


def job_options(value: Any) -> dict[str, str]:
    """The job message's option fields for stored options: empty where the default is."""
    options = stored_options(value)
    return {name: "" if v == DEFAULT_OPTIONS[name] else v for name, v in options.items()}


def task_message(row: Any) -> Task:
    task = Task(
        id=str(row["id"]),
        user_id=str(row["user_id"]),
        status=row["status"],
        bytes_done=row["bytes_done"],
        source_url=row["source_url"],
        attempt=row["attempt"],
        created_at=_timestamp(row["created_at"]),
        updated_at=_timestamp(row["updated_at"]),
        options=TaskOptions(**stored_options(row.get("options"))),
    )
    if row["progress"] is not None:
        task.progress = row["progress"]
    if row["bytes_total"] is not None:
        task.bytes_total = row["bytes_total"]
    if row["error_code"] is not None:
        task.error.CopyFrom(TaskError(code=row["error_code"], message=row["error_message"] or ""))
    if row["status"] == SUCCEEDED and row["result_sha256"] is not None:
        media = json_object(row.get("result_media"))
        task.result.CopyFrom(
            TaskResult(
                size=row["result_size"],
                sha256=row["result_sha256"],
                content_type=result_content_type(row),
                filename=result_filename(row),
                media=TaskMedia(**{k: media[k] for k in MEDIA_FIELDS if media.get(k) is not None}),
            )
        )
        if row.get("result_expires_at") is not None:
            task.result.expires_at.CopyFrom(_timestamp(row["result_expires_at"]))
    return task


def task_from_json(snapshot: Any, user_id: str) -> Task:
    """The task message of a task as API.md shows it (the inverse of
    :func:`~mediaflow_libs.task_view.message_view`)."""
    found = json_object(snapshot)
    options = found["options"]
    task = Task(
        id=found["id"],
        user_id=user_id,
        status=found["status"],
        bytes_done=found["bytes_done"],
        source_url=found["source_url"],
        attempt=found["attempt"],
        created_at=_parsed_timestamp(found["created_at"]),
        updated_at=_parsed_timestamp(found["updated_at"]),
        options=TaskOptions(
            quality=str(options["quality"]),
            mode=options["mode"],
            audio_format=options["audio_format"],
        ),
    )
    if found["progress"] is not None:
        task.progress = found["progress"]
    if found["bytes_total"] is not None:
        task.bytes_total = found["bytes_total"]
    if found["error"] is not None:
        task.error.CopyFrom(TaskError(**found["error"]))
    result = found["result"]
    if result is not None:
        media = result["media"]
        task.result.CopyFrom(
            TaskResult(
                size=result["size"],
                sha256=result["sha256"],
                content_type=result["content_type"],
                filename=result["filename"],
                media=TaskMedia(**{k: media[k] for k in MEDIA_FIELDS if media[k] is not None}),
            )
        )
        if result.get("expires_at") is not None:
            task.result.expires_at.CopyFrom(_parsed_timestamp(result["expires_at"]))
    return task


def _parsed_timestamp(value: str) -> Timestamp:
    return _timestamp(datetime.fromisoformat(value))


def event_body(event_id: int, user_id: Any, snapshot: Any) -> bytes:
    """The TaskEvent message of a ``media.task_events`` row."""
    task = task_from_json(snapshot, str(user_id))
    return TaskEvent(event_id=event_id, task=task).SerializeToString()
