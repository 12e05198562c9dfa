"""Around every HTTP service's routing: request ids, counts and access logs, HEAD answered
on GET routes, operator paths matched exactly, and internal routes kept to their own port."""

from __future__ import annotations

import time
import uuid

import structlog
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.handlers import BaseRouteHandler
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from litestar.utils.path import normalize_path
from prometheus_client import Counter, Histogram

from mediaflow_libs.problems import valid_request_id

log = structlog.get_logger(__name__)

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests answered", ["route", "method", "status"]
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds", "Time to the response's first byte", ["route", "method"]
)
_QUIET_PATHS = {"/healthz", "/readyz", "/metrics"}
# Served on each service's own port, never through the ingress, which keeps them out by their
# exact paths: no other spelling may reach them (Litestar would route `/metrics/` there).
_OPERATOR_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/diagnostics"})
_UNROUTABLE = "/_operator-endpoints-answer-on-their-exact-paths-only"


def request_context_middleware(app: ASGIApp) -> ASGIApp:
    """Give each request an id (the ingress's, when valid), bind it to the logs,
    echo it in ``X-Request-ID``, count it, and log one summary line."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        method = scope["method"]  # as the client sent it (a HEAD may be routed as a GET)
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = valid_request_id(incoming) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                echoed = (b"x-request-id", request_id.encode())
                message["headers"] = [*message.get("headers", []), echoed]
                HTTP_DURATION.labels(_route_template(scope), method).observe(
                    time.perf_counter() - started
                )
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await app(scope, receive, send_with_id)
            finally:
                HTTP_REQUESTS.labels(_route_template(scope), method, str(status)).inc()
                if scope["path"] not in _QUIET_PATHS:
                    log.info(
                        "http.request",
                        method=method,
                        path=scope["path"],
                        status=status,
                        duration_ms=round((time.perf_counter() - started) * 1000, 1),
                    )

    return middleware


def around_routing(app: Litestar, *, answer_head: bool = True) -> Litestar:
    """Wrap Litestar's routing (its ASGI handler), so that every request, one that matches
    no route (404, 405) included, gets the request context: an id, a count, a log line.
    With ``answer_head``, ``HEAD`` is answered on every ``GET`` route (RFC 9110 §9.3.2):
    Litestar routes a HEAD only to a handler declared for it. Not for endless streams
    (SSE), whose body never ends."""
    routed = _operator_paths_exact(app.asgi_handler)
    if answer_head:
        routed = _head_as_get(routed)
    app.asgi_handler = request_context_middleware(routed)
    return app


def _operator_paths_exact(routed: ASGIApp) -> ASGIApp:
    """``/metrics/``, ``//metrics`` and the like get the 404 of any unknown path."""

    async def exact(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if path not in _OPERATOR_PATHS and normalize_path(path) in _OPERATOR_PATHS:
            scope["path"] = _UNROUTABLE
        await routed(scope, receive, send)

    return exact


def _head_as_get(routed: ASGIApp) -> ASGIApp:
    """A HEAD routed as a GET: the GET's status and headers, no body."""

    async def head_as_get(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "HEAD":
            await routed(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.start":
                # The server shares this scope: told GET, it would wait for the body its
                # Content-Length announces and fail the response without one.
                scope["method"] = "HEAD"
            elif message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        # In place: the request context reads the route Litestar puts into this scope.
        scope["method"] = "GET"
        await routed(scope, receive, headers_only)

    return head_as_get


def _route_template(scope: Scope) -> str:
    # The path template, never the raw path: ids must not become label values.
    # Typed as always set; an unmatched request has none.
    handler: object = scope.get("route_handler")
    if isinstance(handler, BaseRouteHandler):
        paths = sorted(handler.paths)
        return paths[0] if paths else "unknown"
    return "unmatched"


def internal_routes_on_their_own_port(app: Litestar, internal_port: int) -> Litestar:
    """``/internal/…`` answers only on ``internal_port``, and that port answers nothing else
    (the 404 of any unknown path), so a NetworkPolicy can open it to the callers alone.
    Apply it to an app that :func:`serve` runs with the same ``internal_port``."""
    routed = app.asgi_handler

    async def by_port(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            server = scope.get("server") or (None, None)
            path = normalize_path(scope["path"])
            internal = path == "/internal" or path.startswith("/internal/")
            if internal != (server[1] == internal_port):
                scope["path"] = _UNROUTABLE
        await routed(scope, receive, send)

    app.asgi_handler = by_port
    return app
