"""The gateway's routes: the tasks API (submit, read, list, cancel, delete, download) and
`/v1/me`."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import asyncpg
import structlog
from litestar import Request, Response, delete, get, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, HeaderParameter, QueryParameter
from litestar.response import Redirect
from opentelemetry import trace
from prometheus_client import Counter

from mediaflow_gateway.cursors import cursor_key, decode_cursor, encode_cursor
from mediaflow_gateway.resources import Resources
from mediaflow_gateway.schemas import Me, TaskEnvelope, TaskPage, problem_responses
from mediaflow_gateway.schemas import User as UserView
from mediaflow_gateway.validation import (
    SubmitTask,
    idempotency_key,
    validated_options,
    validated_source_url,
)
from mediaflow_libs import credits, db, naming, s3, task_transitions, tasks, telemetry
from mediaflow_libs.problems import ProblemError
from mediaflow_libs.request_bodies import TYPED_BODY, read_json_object, typed_body
from mediaflow_libs.session_client import Identity, require_identity
from mediaflow_libs.task_view import Task as TaskView
from mediaflow_libs.task_view import task_view
from mediaflow_libs.tasks import result_filename

log = structlog.get_logger(__name__)
tracer = trace.get_tracer("mediaflow.gateway")

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


TASKS_SUBMITTED = Counter(
    "gateway_tasks_submitted_total",
    "Task submissions: `accepted`, `replayed` (same Idempotency-Key), or the refusal's code",
    ["outcome"],
)


async def identity(
    request: Request[Any, Any, Any], resources: NamedDependency[Resources]
) -> Identity:
    """The ``identity`` dependency: the caller, as auth knows them, or a 401/503."""
    # Taking `resources` orders the two dependencies: Litestar resolves a batch of
    # independent ones in a task group per request, one after another inline.
    return await require_identity(request, resources.sessions, resources.settings.public_url)


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


@post(
    "/v1/tasks",
    status_code=202,
    opt={TYPED_BODY: SubmitTask},
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
    request: Request[Any, Any, Any],
    resources: NamedDependency[Resources],
    # Declared for the published schema only: the route reads every value the header has
    # (two keys are refused), and answers API.md's code for a bad one.
    declared_key: Annotated[
        str | None,
        HeaderParameter(
            name="Idempotency-Key",
            description="Repeat-safe submission key (1 to 255 visible ASCII characters)",
            # A header has a value when sent, never null.
            schema_extra={"type": "string", "oneOf": None, "minLength": 1, "maxLength": 255},
        ),
    ] = None,
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
    # Read from the headers, not declared as a parameter, so that its errors are ours.
    key = idempotency_key(request.headers.getall("idempotency-key", []))
    raw = await read_json_object(request)
    settings = resources.settings
    body = typed_body(
        SubmitTask, raw, {"url": lambda url: validated_source_url(url, settings.egress)}
    )
    options = validated_options(body)
    # The body as sent, unknown fields too: a repeat must be the same request.
    request_hash = (
        hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).digest() if key else None
    )
    submission = await resources.submitter.submit(
        user_id=identity.user_id,
        source_url=body.url,
        idempotency_key=key,
        request_hash=request_hash,
        options=options,
    )
    match submission.outcome:
        case "accepted" | "replayed":
            assert submission.task is not None
            # The request's summary log line names the task.
            structlog.contextvars.bind_contextvars(task_id=submission.task["id"])
            return submission.task, submission.outcome == "replayed"
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
    # Declared for the published schema only: the route reads the header as sent.
    declared_none_match: Annotated[
        str | None,
        HeaderParameter(
            name="If-None-Match",
            description="ETags of copies you hold (or `*`): 304 when one is current",
            # A header has a value when sent, never null.
            schema_extra={"type": "string", "oneOf": None},
        ),
    ] = None,
) -> Response[TaskEnvelope]:
    async with resources.pool.acquire() as con:
        row = await _owned_task(con, _task_id(task_id), identity.user_id)
    task = task_view(row)
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
        "items": [task_view(row) for row in page],
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
    return {"task": task_view(row)}


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
            "ResponseContentDisposition": naming.content_disposition(result_filename(row)),
        },
        ExpiresIn=resources.settings.download_url_ttl_seconds,
    )
    return Redirect(path=url, status_code=302, headers={"Cache-Control": "no-store"})


route_handlers = [me, submit_task, get_task, list_tasks, cancel_task, delete_task, download]
dependencies = {"identity": Provide(identity)}
