"""Types of the public JSON bodies, for the generated OpenAPI schema (API.md is the contract)."""

from __future__ import annotations

from typing import TypedDict

from litestar.openapi.datastructures import ResponseSpec

from mediaflow_libs.problems import PROBLEM_MEDIA_TYPE
from mediaflow_libs.task_view import Task


class Problem(TypedDict):
    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None


class TaskEnvelope(TypedDict):
    task: Task


class TaskPage(TypedDict):
    items: list[Task]
    next_cursor: str | None


class User(TypedDict):
    id: str
    email: str
    name: str | None
    created_at: str


class Credits(TypedDict):
    balance: int
    task_cost: int  # charged when a task is accepted, refunded if it fails or is canceled


class Me(TypedDict):
    user: User
    credits: Credits


_DESCRIPTIONS = {
    400: "Unreadable: a body that is not JSON (invalid_json) or a malformed request",
    401: "No valid session (session_missing, session_invalid, session_expired, session_revoked)",
    402: "Not enough credits",
    403: "Sent by another site's page (csrf_rejected), whatever its credentials",
    404: "No such resource (also another user's)",
    409: "Conflict with the resource's state",
    410: "Gone: the stored result expired and was deleted (result_expired)",
    413: "The body is too large",
    415: "The body is not application/json (unsupported_media_type)",
    422: "A parameter or field is not valid",
    429: "Too many requests; see Retry-After",
    503: "A dependency is unavailable (auth_unavailable); see Retry-After",
}


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problem+json answers a route can give."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=_DESCRIPTIONS[status],
            media_type=PROBLEM_MEDIA_TYPE,
            generate_examples=False,
        )
        for status in statuses
    }
