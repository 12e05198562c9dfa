"""The worker's own HTTP port: ``/healthz``, ``/readyz``, ``/metrics`` and ``/diagnostics``,
the same routes and bodies as every service's (``mediaflow_libs.web``), served by aiohttp.

The HTTP services use Litestar under uvicorn; the worker serves four fixed routes and
already loads aiohttp to fetch sources, so it leaves those two out of its memory (about
7 MiB, see ``bench/worker_rss.py``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mediaflow_libs.facts import configuration_facts
from mediaflow_libs.settings import ServiceSettings
from mediaflow_worker.media.mux import media_tools

ReadinessCheck = Callable[[], Awaitable[None]]
_PROBLEM_TYPE = "application/problem+json"


def _problem(status: int, code: str, detail: str) -> web.Response:
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": uuid.uuid4().hex,
    }
    return web.json_response(body, status=status, content_type=_PROBLEM_TYPE)


def probe_app(checks: list[ReadinessCheck], settings: ServiceSettings) -> web.Application:
    facts = configuration_facts(settings) | {"media_tools": media_tools()}

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        for check in checks:
            try:
                await check()
            except Exception as exc:
                return _problem(503, "not_ready", f"{check.__name__}: {exc}")
        return web.json_response({"status": "ready"})

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def diagnostics(_: web.Request) -> web.Response:
        return web.json_response(facts | {"time": time.time()})

    @web.middleware
    async def problems(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            # Every 4xx/5xx body is a problem document (API.md), 404s included.
            code = "not_found" if exc.status == 404 else "method_not_allowed"
            return _problem(exc.status, code, exc.reason)
        return response

    app = web.Application(middlewares=[problems])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/diagnostics", diagnostics)
    return app


@asynccontextmanager
async def serve_probes(app: web.Application, host: str, port: int) -> AsyncIterator[None]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()  # a bind failure surfaces here
        yield
    finally:
        await runner.cleanup()
