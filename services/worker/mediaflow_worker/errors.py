"""How a job fails on purpose: a :class:`TaskFailure` carrying an API.md error code, or a
:class:`Retry` when another attempt may well succeed."""

from __future__ import annotations

from typing import Literal

ErrorCode = Literal[
    "source_unreachable",
    "source_http_error",
    "source_timeout",
    "not_media",
    "too_large",
    "blocked_destination",
    "format_unavailable",
    "storage_error",
    "internal",
]


class TaskFailure(Exception):
    """A job ends ``failed`` with this code and message; the message is shown to the user,
    so it names what went wrong with their source, never our internals."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: ErrorCode = code
        self.message = message


class Retry(TaskFailure):
    """A transient failure: the job is tried again after a backoff, and fails with this code
    and message only once its attempts are used up. ``delay`` is the least wait the cause
    asks for (a source's ``Retry-After``, in seconds), None to leave it to the backoff."""

    def __init__(self, code: ErrorCode, message: str, delay: float | None = None) -> None:
        super().__init__(code, message)
        self.delay = delay
