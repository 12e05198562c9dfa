"""A task shows the same whichever way it reaches a client: straight from its row (the
routes, the stream's snapshots) or through its message (the live events)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from mediaflow_libs import tasks
from mediaflow_libs.task_view import message_view, task_view

CREATED = datetime(2026, 1, 31, 12, 0, 0, 250_000, tzinfo=UTC)
UPDATED = datetime(2026, 1, 31, 12, 5, tzinfo=UTC)


def _row(**columns: Any) -> dict[str, Any]:
    return {
        "id": "7c1db25f-0000-4000-8000-000000000001",
        "user_id": "7c1db25f-0000-4000-8000-000000000002",
        "status": "queued",
        "progress": None,
        "bytes_done": 0,
        "bytes_total": None,
        "source_url": "https://media.example/a.mp4",
        "attempt": 0,
        "error_code": None,
        "error_message": None,
        "result_size": None,
        "result_sha256": None,
        "result_content_type": None,
        "result_filename": None,
        "result_media": None,
        "result_expires_at": None,
        "options": None,
        "created_at": CREATED,
        "updated_at": UPDATED,
    } | columns


SUCCEEDED = {
    "status": "succeeded",
    "progress": 100,
    "bytes_done": 5,
    "bytes_total": 5,
    "attempt": 2,
    "result_size": 5,
    "result_sha256": "ab" * 32,
    "result_content_type": "video/mp4",
}


@pytest.mark.parametrize(
    "row",
    [
        _row(),
        _row(status="running", progress=40, bytes_done=4, bytes_total=10, attempt=1),
        _row(options={"quality": "720", "mode": "audio", "audio_format": "mp3"}),
        _row(options='{"mode": "mute"}'),  # jsonb the connection did not decode
        _row(status="failed", error_code="source_unreachable", error_message=None),
        _row(status="canceled", error_code="canceled", error_message="Canceled by the user."),
        _row(**SUCCEEDED),  # stored before file names and media were: named after the URL
        _row(
            **SUCCEEDED,
            result_filename="clip.mp4",
            result_media={"title": "Clip", "duration_seconds": 3, "width": 640, "height": 360},
            result_expires_at=datetime(2026, 3, 1, tzinfo=UTC),
        ),
        _row(**SUCCEEDED | {"result_content_type": None}),
        _row(status="failed", result_sha256="ab" * 32),  # a result only a success shows
    ],
)
def test_a_row_shows_as_its_message_does(row: dict[str, Any]) -> None:
    # As JSON, byte for byte: a task's ETag is a digest of it (3 and 3.0 are equal in Python).
    shown = json.dumps(task_view(row), sort_keys=True)
    assert shown == json.dumps(message_view(tasks.task_message(row)), sort_keys=True)


def test_the_view_is_what_api_md_shows() -> None:
    shown = task_view(
        _row(**SUCCEEDED, result_media={"duration_seconds": 3}, options={"quality": "1080"})
    )
    assert shown["options"] == {"quality": 1080, "mode": "auto", "audio_format": "original"}
    assert shown["created_at"] == "2026-01-31T12:00:00.250000Z"
    assert shown["result"] is not None
    assert shown["result"]["filename"] == "a.mp4"
    assert shown["result"]["media"]["duration_seconds"] == 3.0
    assert shown["result"]["media"]["title"] is None
