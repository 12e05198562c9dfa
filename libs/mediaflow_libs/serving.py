"""Running an app under uvicorn: as the process (with our logging, problem answers to
requests the parser refuses, and a frozen start-up heap), or beside other work in one
event loop."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import uvicorn
from litestar.types import ASGIApp
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mediaflow_libs.problems import problem_body, valid_request_id
from mediaflow_libs.settings import ServiceSettings

# Objects allocated while serving a request die by reference counting, so a young collection
# finds next to nothing to free; at Python's default threshold (700) one ran every few
# requests and the collector took 3-4% of a busy gateway's CPU. Cyclic garbage is still
# freed, just in fewer, larger collections (at most this many objects wait for one).
YOUNG_COLLECTION_THRESHOLD = 20_000


def freeze_startup_heap() -> None:
    """Move every object now alive out of the cyclic collector's reach: they live as long as
    the process, and full collections walking them stall all work in flight. Young
    collections then run at ``YOUNG_COLLECTION_THRESHOLD``. Call once started up."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


class FreezingServer(uvicorn.Server):
    """uvicorn's server that freezes the start-up heap once the app has started."""

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets=sockets)
        freeze_startup_heap()


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
