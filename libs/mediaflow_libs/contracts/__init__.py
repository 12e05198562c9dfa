"""Message contracts generated from ``proto/``; regenerate with ``make proto``."""

from __future__ import annotations

from mediaflow_libs.contracts.messages_pb2 import (
    CredentialRevoked,
    Job,
    Task,
    TaskError,
    TaskEvent,
    TaskMedia,
    TaskOptions,
    TaskResult,
)

__all__ = [
    "CredentialRevoked",
    "Job",
    "Task",
    "TaskError",
    "TaskEvent",
    "TaskMedia",
    "TaskOptions",
    "TaskResult",
]
