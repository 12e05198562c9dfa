"""RFC 9457 problem responses: every 4xx/5xx any service sends goes through here."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

log = structlog.get_logger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

# Codes for failures Litestar itself raises before a handler runs.
_FRAMEWORK_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ProblemError(HTTPException):
    """An error with a stable ``code`` that clients branch on."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=detail, headers=dict(headers or {}))
        self.code = code
        self.fields = dict(extra or {})


def problem_body(status: int, code: str, detail: str, request_id: str | None) -> dict[str, Any]:
    return {
        "type": f"https://mediaflow.dev/problems/{code.replace('_', '-')}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id,
    }


def problem_response(
    status: int,
    code: str,
    detail: str,
    request_id: str | None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response[bytes]:
    body = problem_body(status, code, detail, request_id) | dict(extra or {})
    return Response(
        content=json.dumps(body).encode(),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )


def valid_request_id(value: str) -> str | None:
    """``value`` when it may serve as a request id (the ingress's), else None."""
    return value if VALID_REQUEST_ID.match(value) else None


def _request_id(request: Request[Any, Any, Any]) -> str:
    value = request.scope.get("state", {}).get("request_id")
    if isinstance(value, str):
        return value
    # Raised before the request-context middleware ran (no route matched, say): the
    # ingress's id when it sent a valid one, else a new one, so every problem has one.
    return valid_request_id(request.headers.get("x-request-id", "")) or uuid.uuid4().hex


def _handle_problem(request: Request[Any, Any, Any], exc: ProblemError) -> Response[bytes]:
    return problem_response(
        exc.status_code, exc.code, exc.detail, _request_id(request), exc.headers, exc.fields
    )


def _handle_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    code = _FRAMEWORK_CODES.get(status, "internal" if status >= 500 else "bad_request")
    detail = "No such route." if isinstance(exc, NotFoundException) else exc.detail
    if isinstance(exc, ValidationException):
        detail = "The request's parameters are not valid."
    return problem_response(status, code, detail, _request_id(request), exc.headers)


def _handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("request.unhandled_error", path=request.url.path)
    return problem_response(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "internal",
        "An internal error occurred; it has been logged.",
        _request_id(request),
    )


exception_handlers = {
    ProblemError: _handle_problem,
    HTTPException: _handle_http,
    Exception: _handle_unexpected,
}
