"""The operator routes every service answers on its own port: ``/healthz``, ``/readyz``,
``/metrics`` and ``/diagnostics``."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import MediaType, Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mediaflow_libs.facts import configuration_facts
from mediaflow_libs.problems import ProblemError
from mediaflow_libs.settings import ServiceSettings

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
