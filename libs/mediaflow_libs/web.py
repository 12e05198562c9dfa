"""What every HTTP service shares: request ids and access logs, health and metrics routes,
reading JSON bodies safely, and running under uvicorn (as the process, or beside other work
in one event loop)."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import structlog
import uvicorn
from litestar import Litestar, MediaType, Request, Response, get
from litestar.enums import ScopeType
from litestar.handlers import BaseRouteHandler
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from litestar.utils.path import normalize_path
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mediaflow_libs.facts import configuration_facts
from mediaflow_libs.problems import ProblemError, exception_handlers, problem_body, valid_request_id
from mediaflow_libs.settings import ServiceSettings

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


ReadinessCheck = Callable[[], Awaitable[None]]


def health_routes(
    readiness_checks: Callable[[Any], list[ReadinessCheck]],
    settings: ServiceSettings | None = None,
    extra_facts: dict[str, Any] | None = None,
) -> list[Any]:
    """``/healthz``, ``/readyz``, ``/metrics`` and, given the settings, ``/diagnostics``
    (with ``extra_facts`` beside the configuration's); ``readiness_checks(app_state)`` lists
    the dependency probes ``/readyz`` runs."""

    @get("/healthz", media_type=MediaType.JSON, include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", media_type=MediaType.JSON, include_in_schema=False)
    async def readyz(request: Request[Any, Any, Any]) -> dict[str, str]:
        for check in readiness_checks(request.app.state):
            try:
                await check()
            except Exception as exc:
                raise ProblemError(503, "not_ready", f"{check.__name__}: {exc}") from exc
        return {"status": "ready"}

    @get("/metrics", include_in_schema=False)
    async def metrics() -> Response[bytes]:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    routes = [healthz, readyz, metrics]
    if settings is not None:
        facts = configuration_facts(settings) | (extra_facts or {})

        @get("/diagnostics", media_type=MediaType.JSON, include_in_schema=False)
        async def diagnostics() -> dict[str, Any]:
            return facts | {"time": time.time()}

        routes.append(diagnostics)
    return routes


def _is_json(content_type: str) -> bool:
    """``application/json``, alone or with ``charset=utf-8`` (the only charset JSON has,
    RFC 8259 §8.1); type, subtype and parameter names are case-insensitive."""
    media_type, *parameters = content_type.split(";")
    if media_type.strip().lower() != "application/json":
        return False
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            return False
    return True


def _unsupported_media_type() -> ProblemError:
    return ProblemError(
        415,
        "unsupported_media_type",
        "The body must be JSON, sent with Content-Type: application/json.",
        # RFC 9110 §15.5.16: Accept names the media type that would have been accepted.
        headers={"Accept": "application/json"},
    )


def _not_json(constant: str) -> None:
    # Python's parser takes NaN and Infinity, which JSON (RFC 8259) has no place for.
    raise ValueError(f"{constant} is not JSON")


async def read_json_object(
    request: Request[Any, Any, Any], max_bytes: int = 64 * 1024
) -> dict[str, Any]:
    """The request body as a JSON object, or a problem: 415 ``unsupported_media_type`` when
    it is declared as anything but JSON (or, not declared at all, is not empty), 413 past
    ``max_bytes``, 400 ``invalid_json`` when it is not a JSON object (or past the parser's
    limits). The media type is checked first: a form or text body, which a page of another
    site may send without asking, is refused before anything reads it."""
    declared_types = request.headers.getall("content-type", [])
    if declared_types and not (len(declared_types) == 1 and _is_json(declared_types[0])):
        raise _unsupported_media_type()
    declared = request.headers.get("content-length", "")
    # (20 digits are past any limit, and int() refuses thousands.)
    announced = int(declared[:20]) if declared.isascii() and declared.isdigit() else 0
    if not declared_types and announced > 0:
        raise _unsupported_media_type()  # a body announced without saying what it is
    # Refuses an announced excess early; the stream below enforces the limit either way.
    if announced > max_bytes:
        raise ProblemError(413, "payload_too_large", f"The body may be at most {max_bytes} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise ProblemError(
                413, "payload_too_large", f"The body may be at most {max_bytes} bytes."
            )
    if not declared_types and body:
        raise _unsupported_media_type()
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_not_json)
    except UnicodeDecodeError as exc:
        raise ProblemError(400, "invalid_json", "The body is not valid UTF-8.") from exc
    except (ValueError, RecursionError) as exc:
        # ValueError covers syntax errors and integers past Python's digit limit;
        # RecursionError, nesting deeper than the parser goes.
        raise ProblemError(400, "invalid_json", "The body is not valid JSON.") from exc
    if not isinstance(value, dict):
        raise ProblemError(400, "invalid_json", "The body must be a JSON object.")
    return value


# JSON may escape NUL and lone surrogates (``"\u0000"``, ``"\ud800"``): PostgreSQL text
# cannot hold the first and UTF-8 cannot encode the second, which is no character at all.
_UNSTORABLE_TEXT = re.compile(r"[\x00\ud800-\udfff]")


def storable_text(value: object) -> str | None:
    """``value`` when it is a string that can be encoded and stored, else None; each field
    read from a body goes through here, so its own problem code names the bad field."""
    if not isinstance(value, str) or _UNSTORABLE_TEXT.search(value):
        return None
    return value


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


# Objects allocated while serving a request die by reference counting, so a young collection
# finds next to nothing to free; at Python's default threshold (700) one ran every few
# requests and the collector took 3-4% of a busy gateway's CPU. Cyclic garbage is still
# freed, just in fewer, larger collections (at most this many objects wait for one).
YOUNG_COLLECTION_THRESHOLD = 20_000


class FreezingServer(uvicorn.Server):
    """uvicorn's server that, once the app has started, moves every object then alive out of
    the cyclic collector's reach: they live as long as the process, and full collections
    walking them stall every request in flight. Young collections then run at
    ``YOUNG_COLLECTION_THRESHOLD``."""

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets=sockets)
        gc.collect()
        gc.freeze()
        gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


def forwarded_allow_ips(settings: ServiceSettings) -> list[str]:
    """The peers uvicorn takes X-Forwarded-For from (TRUSTED_PROXIES): the client address
    per-address sign-in limits count is the one the ingress saw."""
    return [p.strip() for p in settings.trusted_proxies.split(",") if p.strip()]


class ProblemHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, but a request its parser refuses (a control byte in a
    header value, an unknown method, a raw non-ASCII path) is answered with a problem, not
    plain text: API.md's errors hold for whatever a client can send. The request id is the
    ingress's when its header was read before the fault (nginx sends its own headers first),
    else a new one."""

    def send_400_response(self, msg: str) -> None:
        request_id = None
        for name, value in getattr(self, "headers", ()):
            if name == b"x-request-id":
                request_id = valid_request_id(value.decode("latin-1"))
        body = problem_body(
            400, "bad_request", "The request is malformed.", request_id or uuid.uuid4().hex
        )
        content = json.dumps(body).encode()
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head += [
            b"content-type: application/problem+json\r\n",
            b"content-length: %d\r\n" % len(content),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + content)
        self.transport.close()


def serve(app_factory: str, settings: ServiceSettings, *, internal_port: int | None = None) -> None:
    """Run an app factory (``module:function``) under uvicorn with our logging, on
    ``settings.port`` and, when given, on ``internal_port`` too (one process, one app)."""
    options: dict[str, Any] = {
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "access_log": False,
        "log_config": None,
        # The client address (per-address sign-in limits, logs) comes from X-Forwarded-For
        # only when the peer is a trusted proxy; anyone else could forge it.
        "proxy_headers": True,
        "forwarded_allow_ips": forwarded_allow_ips(settings),
        "timeout_graceful_shutdown": 10,
        "http": ProblemHttpToolsProtocol,
    }
    config = uvicorn.Config(app_factory, **options)
    server = FreezingServer(config)
    if internal_port is None:
        server.run()
    else:
        # uvicorn binds one address; a second Config binds the internal one the same way.
        internal = uvicorn.Config(app_factory, **(options | {"port": internal_port}))
        server.run(sockets=[config.bind_socket(), internal.bind_socket()])
    if not server.started:
        sys.exit(STARTUP_FAILURE)  # as uvicorn.run does


def operator_app(
    readiness: list[ReadinessCheck],
    settings: ServiceSettings,
    extra_facts: dict[str, Any] | None = None,
) -> Litestar:
    """An app of the operator routes alone (``/healthz``, ``/readyz``, ``/metrics``,
    ``/diagnostics``), with problem documents for everything else: the port of a service
    whose work is not HTTP (the worker)."""
    return around_routing(
        Litestar(
            logging_config=None,  # our structlog JSON, not Litestar's plain text
            route_handlers=health_routes(lambda _: readiness, settings, extra_facts),
            exception_handlers=exception_handlers,  # type: ignore[arg-type]
            openapi_config=None,
            debug=False,
        )
    )


class _EmbeddedServer(uvicorn.Server):
    """uvicorn's server inside someone else's event loop: the process's signals stay its
    owner's (uvicorn would take SIGTERM and SIGINT for itself)."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def serve_in_loop(app: ASGIApp, host: str, port: int) -> AsyncIterator[None]:
    """Serve ``app`` on ``host:port`` in the running event loop while the block runs. The
    port is bound, and connections are accepted, before the block starts (a bind failure
    raises here)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family)
    config = uvicorn.Config(app, lifespan="off", access_log=False, log_config=None)
    server = _EmbeddedServer(config)
    serving = asyncio.create_task(server.serve(sockets=[listener]), name="operator-port")
    try:
        yield
    finally:
        server.should_exit = True
        await serving
        listener.close()
