"""The tasks API: submit, read, list, cancel, delete, download."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, cast
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog
from litestar import Request, Response, delete, get, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.enums import ParamType
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
)
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect
from opentelemetry import trace
from prometheus_client import Counter

from mediaflow_gateway.cursors import cursor_key, decode_cursor, encode_cursor
from mediaflow_gateway.resources import Resources
from mediaflow_gateway.schemas import Me, TaskEnvelope, TaskPage, problem_responses
from mediaflow_gateway.schemas import Task as TaskView
from mediaflow_gateway.schemas import User as UserView
from mediaflow_libs import credits, db, egress, naming, s3, task_transitions, tasks, telemetry
from mediaflow_libs.egress import EgressPolicy
from mediaflow_libs.problems import ProblemError
from mediaflow_libs.request_bodies import read_json_object, storable_text
from mediaflow_libs.session_client import Identity, require_identity

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("mediaflow.gateway")

MAX_URL_LENGTH = 2048
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
# Exactly the characters for which str.isspace() holds, and the C0 controls.
SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f]")
SUBMIT_WINDOW_SECONDS = 60

TASKS_SUBMITTED = Counter(
    "gateway_tasks_submitted_total",
    "Task submissions: `accepted`, `replayed` (same Idempotency-Key), or the refusal's code",
    ["outcome"],
)


def validated_source_url(value: object, policy: EgressPolicy = egress.PUBLIC_ONLY) -> str:
    """The URL with its host IDNA-normalised, or a 422 naming what is wrong with it. A literal
    address the egress rule refuses (on its port) is 422 ``blocked_destination``; names are
    left to the worker, which resolves them (no DNS here)."""
    text = storable_text(value)
    if text is None or not text.strip():
        raise ProblemError(422, "invalid_url", "`url` must be a non-empty string of characters.")
    url = text.strip()
    if len(url) > MAX_URL_LENGTH:
        raise ProblemError(
            422, "invalid_url", f"`url` may have at most {MAX_URL_LENGTH} characters."
        )
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise ProblemError(422, "invalid_url", f"`url` cannot be parsed: {exc}.") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise ProblemError(422, "invalid_url", "Only http and https URLs can be fetched.")
    if not hostname:
        raise ProblemError(422, "invalid_url", "`url` must name a host.")
    if parts.username is not None or parts.password is not None:
        raise ProblemError(422, "invalid_url", "`url` must not carry a user name or password.")
    if SPACE_OR_CONTROL.search(url):
        raise ProblemError(
            422, "invalid_url", "`url` must not contain spaces or control characters."
        )
    address = egress.literal_address(hostname)
    if address is not None:
        # The same words whatever the reason: the answer tells nothing about what is there.
        effective_port = egress.DEFAULT_PORTS[parts.scheme.lower()] if port is None else port
        if not policy.allows(address, effective_port):
            raise ProblemError(
                422, "blocked_destination", f"{hostname} is not reachable from here."
            )
        host = f"[{address}]" if address.version == 6 else str(address)
    else:
        try:
            host = egress.host_name(hostname)
        except ValueError as exc:
            raise ProblemError(
                422, "invalid_url", "`url` has a host name that is not valid."
            ) from exc
        if not egress.is_well_formed_host_name(host):
            raise ProblemError(422, "invalid_url", "`url` has a host name that is not valid.")
    if port == 0:
        raise ProblemError(422, "invalid_url", "`url` has port 0, which nothing listens on.")
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, ""))


def validated_options(body: dict[str, Any]) -> dict[str, str]:
    """API.md's options with defaults filled in, or 422 ``invalid_options``."""
    options = dict(tasks.DEFAULT_OPTIONS)
    for name, allowed in tasks.OPTION_VALUES.items():
        if name not in body:
            continue
        value = body[name]
        # A height is a JSON number (true is not 1); "720" is not a height.
        text: str | None = None
        if name == "quality" and isinstance(value, int) and not isinstance(value, bool):
            text = str(value)
        elif isinstance(value, str) and not value.isdigit():
            text = value
        if text is None or text not in allowed:
            shown = ", ".join(f'"{v}"' if not v.isdigit() else v for v in allowed)
            raise ProblemError(422, "invalid_options", f"`{name}` must be one of {shown}.")
        options[name] = text
    if options["audio_format"] != "original" and options["mode"] != "audio":
        raise ProblemError(
            422, "invalid_options", '`audio_format` other than "original" needs `mode: "audio"`.'
        )
    return options


def _task_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError as exc:
        # A malformed id is as unknown as someone else's: same answer.
        raise _not_found() from exc


def _not_found() -> ProblemError:
    return ProblemError(404, "task_not_found", "No such task.")


async def _owned_task(con: db.Connection, task_id: str, user_id: str) -> asyncpg.Record:
    row = await con.fetchrow(
        "SELECT * FROM media.tasks WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
        task_id,
        user_id,
    )
    if row is None:
        raise _not_found()
    return row


def _etag(task: TaskView) -> str:
    digest = hashlib.sha256(json.dumps(task, sort_keys=True).encode()).hexdigest()[:32]
    return f'"{digest}"'


def _none_match(header: str, etag: str) -> bool:
    """Whether ``If-None-Match`` matches the task (RFC 9110 §13.1.2): `*` (it exists), or
    any listed tag compared weakly, `W/` ignored."""
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in tags or etag in tags


@get("/v1/me", responses=problem_responses(400, 401, 503))
async def me(identity: NamedDependency[Identity], resources: NamedDependency[Resources]) -> Me:
    async with resources.pool.acquire() as con, con.transaction():
        await credits.ensure_account(con, identity.user_id, resources.settings.signup_credits)
        balance = await credits.balance(con, identity.user_id)
    cost = resources.settings.task_cost_credits
    return {
        "user": cast(UserView, identity.user_json()),
        "credits": {"balance": balance, "task_cost": cost},
    }


def _idempotency_key(request: Request[Any, Any, Any]) -> str | None:
    keys = request.headers.getall("idempotency-key", [])
    if not keys:
        return None
    # Two keys would leave it to chance which one counts.
    if len(keys) > 1 or not IDEMPOTENCY_KEY.match(keys[0]):
        raise ProblemError(
            422,
            "invalid_idempotency_key",
            "Send one Idempotency-Key of 1 to 255 visible ASCII characters.",
        )
    return keys[0]


@dataclass
class _SubmitTaskOperation(Operation):
    """The body and the Idempotency-Key header are read by hand (to answer `invalid_json`,
    `invalid_url` and `invalid_idempotency_key` as API.md says), so they are declared here."""

    def __post_init__(self) -> None:
        url = Schema(type=OpenAPIType.STRING, max_length=MAX_URL_LENGTH, format=OpenAPIFormat.URI)
        choices = {
            name: Schema(
                one_of=[
                    Schema(type=OpenAPIType.STRING, enum=[v for v in values if not v.isdigit()]),
                    Schema(type=OpenAPIType.INTEGER, enum=[int(v) for v in values if v.isdigit()]),
                ]
                if name == "quality"
                else None,
                type=None if name == "quality" else OpenAPIType.STRING,
                enum=None if name == "quality" else list(values),
                default=tasks.DEFAULT_OPTIONS[name],
            )
            for name, values in tasks.OPTION_VALUES.items()
        }
        body = Schema(type=OpenAPIType.OBJECT, required=["url"], properties={"url": url, **choices})
        self.request_body = RequestBody(
            required=True, content={"application/json": OpenAPIMediaType(schema=body)}
        )
        self.parameters = [
            Parameter(
                name="Idempotency-Key",
                param_in=ParamType.HEADER,
                required=False,
                description="Repeat-safe submission key (1 to 255 visible ASCII characters)",
                schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=255),
            )
        ]


@post(
    "/v1/tasks",
    status_code=202,
    operation_class=_SubmitTaskOperation,
    responses=problem_responses(400, 401, 402, 403, 409, 413, 415, 422, 429, 503),
    response_headers=[
        ResponseHeader(
            name="Location",
            value="/v1/tasks/{id}",  # its type gives the header's schema: a string
            description="The new task's URL",
            documentation_only=True,
        )
    ],
)
async def submit_task(
    request: Request[Any, Any, Any], resources: NamedDependency[Resources]
) -> Response[TaskEnvelope]:
    # The job carries this span's context, so the worker's trace continues the request's
    # (and the caller's, when it sent a W3C `traceparent`).
    with tracer.start_as_current_span(
        "POST /v1/tasks",
        context=telemetry.extract_trace_context(request.headers),
        kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": "POST", "http.route": "/v1/tasks"},
    ):
        if trace_id := telemetry.current_trace_id():
            structlog.contextvars.bind_contextvars(trace_id=trace_id)
        try:
            # The session is checked here, not as a dependency, so that its refusals (401,
            # 503 auth_unavailable) are counted with the others. A cross-site one is refused
            # before any route runs (http_cross_site_refused_total).
            identity = await require_identity(
                request, resources.sessions, resources.settings.public_url
            )
            task, replayed = await _submit(request, identity, resources)
        except ProblemError as problem:
            TASKS_SUBMITTED.labels(problem.code).inc()
            raise
    TASKS_SUBMITTED.labels("replayed" if replayed else "accepted").inc()
    return Response(
        {"task": task}, status_code=202, headers={"Location": f"/v1/tasks/{task['id']}"}
    )


async def _submit(
    request: Request[Any, Any, Any], identity: Identity, resources: Resources
) -> tuple[TaskView, bool]:
    """The task for this submission and whether it already existed (same Idempotency-Key)."""
    key = _idempotency_key(request)  # read from the headers so its errors are ours
    body = await read_json_object(request)
    source_url = validated_source_url(body.get("url"), resources.settings.egress)
    options = validated_options(body)
    settings = resources.settings
    request_hash = (
        hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest() if key else None
    )
    submission = await resources.submitter.submit(
        user_id=identity.user_id,
        source_url=source_url,
        idempotency_key=key,
        request_hash=request_hash,
        options=options,
    )
    match submission.outcome:
        case "accepted" | "replayed":
            assert submission.task is not None
            # The request's summary log line names the task.
            structlog.contextvars.bind_contextvars(task_id=submission.task["id"])
            return cast(TaskView, submission.task), submission.outcome == "replayed"
        case "idempotency_conflict":
            raise ProblemError(
                409, "idempotency_conflict", "This Idempotency-Key was used with a different body."
            )
        case "rate_limited":
            raise ProblemError(
                429,
                "rate_limited",
                f"At most {settings.task_submits_per_minute} tasks per minute.",
                headers={"Retry-After": str(submission.retry_after)},
            )
        case "insufficient_credits":
            raise ProblemError(
                402,
                "insufficient_credits",
                f"A task costs {credits.amount(settings.task_cost_credits)}; the balance is lower.",
            )
    raise AssertionError(f"unknown submission outcome {submission.outcome!r}")


@get(
    "/v1/tasks/{task_id:str}",
    responses=problem_responses(400, 401, 404, 503),
    response_headers=[
        ResponseHeader(
            name="ETag",
            value='"<etag>"',  # its type gives the header's schema: a string
            description="Send as If-None-Match for a 304",
            documentation_only=True,
        )
    ],
)
async def get_task(
    request: Request[Any, Any, Any],
    task_id: FromPath[str],
    identity: NamedDependency[Identity],
    resources: NamedDependency[Resources],
) -> Response[TaskEnvelope]:
    async with resources.pool.acquire() as con:
        row = await _owned_task(con, _task_id(task_id), identity.user_id)
    task = _view(row)
    etag = _etag(task)
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if _none_match(request.headers.get("if-none-match", ""), etag):
        return Response(None, status_code=304, headers=headers)  # type: ignore[arg-type]
    return Response({"task": task}, headers=headers)


@get("/v1/tasks", responses=problem_responses(400, 401, 422, 503))
async def list_tasks(
    identity: NamedDependency[Identity],
    resources: NamedDependency[Resources],
    # Read as text so that a bad value gets API.md's `invalid_limit`; published as what it is.
    limit: Annotated[
        str | None,
        QueryParameter(
            description="1 to 100, default 20",
            schema_extra={"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
        ),
    ] = None,
    cursor: Annotated[
        str | None, QueryParameter(description="next_cursor of the last page")
    ] = None,
) -> TaskPage:
    raw_limit = limit if limit is not None else str(DEFAULT_PAGE_SIZE)
    # isdigit alone lets through digits int() refuses ("²") or reads (Arabic-Indic).
    valid = raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 3
    if not valid or not 1 <= int(raw_limit) <= MAX_PAGE_SIZE:
        raise ProblemError(422, "invalid_limit", f"`limit` must be 1 to {MAX_PAGE_SIZE}.")
    page_size = int(raw_limit)
    key = cursor_key(resources.settings.service_secret.get_secret_value())
    after = decode_cursor(key, identity.user_id, cursor) if cursor else None
    async with resources.pool.acquire() as con:
        rows = await con.fetch(
            """SELECT * FROM media.tasks
               WHERE user_id = $1 AND deleted_at IS NULL
                 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
               ORDER BY created_at DESC, id DESC LIMIT $4""",
            identity.user_id,
            after[0] if after else None,
            after[1] if after else None,
            page_size + 1,
        )
    page = rows[:page_size]
    next_cursor = (
        encode_cursor(key, identity.user_id, page[-1]["created_at"], str(page[-1]["id"]))
        if len(rows) > page_size
        else None
    )
    return {
        "items": [_view(row) for row in page],
        "next_cursor": next_cursor,
    }


@post(
    "/v1/tasks/{task_id:str}/cancel",
    status_code=202,
    responses=problem_responses(400, 401, 403, 404, 409, 503),
)
async def cancel_task(
    task_id: FromPath[str],
    identity: NamedDependency[Identity],
    resources: NamedDependency[Resources],
) -> TaskEnvelope:
    task_id = _task_id(task_id)
    async with resources.pool.acquire() as con, con.transaction():
        await _owned_task(con, task_id, identity.user_id)
        # A running task's worker sees the change at its next progress update and stops.
        row = await task_transitions.transition(con, resources.topology, task_id, tasks.CANCELED)
    if row is None:
        raise ProblemError(409, "task_finished", "The task has already finished.")
    log.info("task.canceled", task_id=task_id)
    return {"task": _view(row)}


@delete(
    "/v1/tasks/{task_id:str}",
    status_code=204,
    responses=problem_responses(400, 401, 403, 404, 503),
)
async def delete_task(
    task_id: FromPath[str],
    identity: NamedDependency[Identity],
    resources: NamedDependency[Resources],
) -> None:
    task_id = _task_id(task_id)
    async with resources.pool.acquire() as con, con.transaction():
        if not await task_transitions.delete(con, resources.topology, task_id, identity.user_id):
            raise _not_found()
    log.info("task.deleted", task_id=task_id)
    await remove_objects(resources, identity.user_id, task_id)


async def remove_objects(resources: Resources, user_id: str, task_id: str) -> None:
    """Delete a deleted task's stored objects now; when the store does not answer, the
    worker's sweep does it later (the task is already gone for its owner)."""
    try:
        await s3.delete_prefix(
            resources.s3, resources.settings.s3_bucket, tasks.object_prefix(user_id, task_id)
        )
        async with resources.pool.acquire() as con:
            await task_transitions.mark_objects_removed(con, user_id, task_id)
    except Exception as exc:
        log.warning("task.objects_not_removed", task_id=task_id, error=repr(exc))


@get(
    "/v1/tasks/{task_id:str}/download",
    status_code=302,
    responses=problem_responses(400, 401, 404, 409, 410, 503),
)
async def download(
    task_id: FromPath[str],
    identity: NamedDependency[Identity],
    resources: NamedDependency[Resources],
) -> Redirect:
    async with resources.pool.acquire() as con:
        row = await _owned_task(con, _task_id(task_id), identity.user_id)
    if row["status"] != tasks.SUCCEEDED or not row["object_key"]:
        raise ProblemError(409, "task_not_ready", f"The task is {row['status']}, not succeeded.")
    expires_at = row["result_expires_at"]
    if row["objects_removed_at"] is not None or (
        expires_at is not None and expires_at <= datetime.now(UTC)
    ):
        raise ProblemError(410, "result_expired", "The stored file has expired and was deleted.")
    url = await resources.s3_public.generate_presigned_url(
        "get_object",
        Params={
            "Bucket": resources.settings.s3_bucket,
            "Key": row["object_key"],
            "ResponseContentDisposition": naming.content_disposition(
                tasks.task_message(row).result.filename
            ),
        },
        ExpiresIn=resources.settings.download_url_ttl_seconds,
    )
    return Redirect(path=url, status_code=302, headers={"Cache-Control": "no-store"})


def _view(row: asyncpg.Record) -> TaskView:
    """A task row as the API shows it (the JSON of its ``Task`` message)."""
    return cast(TaskView, tasks.task_json(tasks.task_message(row)))
