"""RESULT_RETENTION_DAYS: when a stored result expires, and what the task says of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from mediaflow_libs.task_view import task_view
from mediaflow_worker.outcome import result_expiry
from mediaflow_worker.settings import WorkerSettings

REQUIRED = {"service_secret": "x" * 32, "s3_access_key_id": "k", "s3_secret_access_key": "s"}
NOW = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


def _row(expires_at: datetime | None) -> dict[str, object]:
    return {
        "id": "7c1db25f-0000-4000-8000-000000000001",
        "user_id": "7c1db25f-0000-4000-8000-000000000002",
        "status": "succeeded",
        "progress": 100,
        "bytes_done": 5,
        "bytes_total": 5,
        "source_url": "https://media.example/a.mp4",
        "attempt": 1,
        "error_code": None,
        "error_message": None,
        "result_size": 5,
        "result_sha256": "ab" * 32,
        "result_content_type": "video/mp4",
        "result_filename": "a.mp4",
        "result_expires_at": expires_at,
        "created_at": NOW,
        "updated_at": NOW,
    }


def test_a_result_is_kept_for_the_configured_days() -> None:
    settings = WorkerSettings(**REQUIRED)  # type: ignore[arg-type]
    assert settings.result_retention_days == 30
    assert result_expiry(settings, NOW) == NOW + timedelta(days=30)
    week = WorkerSettings(**REQUIRED, result_retention_days=7)  # type: ignore[arg-type]
    expires = result_expiry(week, NOW)
    assert expires == datetime(2026, 2, 7, 12, 0, tzinfo=UTC)
    shown = task_view(_row(expires))
    assert shown["result"]["expires_at"] == "2026-02-07T12:00:00Z"


def test_zero_keeps_results_for_ever() -> None:
    forever = WorkerSettings(**REQUIRED, result_retention_days=0)  # type: ignore[arg-type]
    assert result_expiry(forever, NOW) is None
    shown = task_view(_row(None))
    assert shown["result"]["expires_at"] is None


def test_a_negative_retention_stops_the_worker_at_start() -> None:
    with pytest.raises(ValidationError) as caught:
        WorkerSettings(**REQUIRED, result_retention_days=-1)  # type: ignore[arg-type]
    assert "result_retention_days" in str(caught.value)
