"""The published OpenAPI document: the gateway's routes (Litestar's, generated from the
route declarations, plus what those declarations cannot say), merged with auth's and the
notifier's descriptions, which each of those packages owns. API.md is the reference.

The other two descriptions are imported, not fetched: every process runs from one image
holding the whole workspace (Dockerfile, deploy/README.md), so the document never depends
on auth or the notifier answering, and it always matches the code deployed with it."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, Router, get
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.enums import OpenAPIMediaType
from litestar.exceptions import NotFoundException
from litestar.handlers import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin

from mediaflow_auth import openapi as auth_openapi
from mediaflow_gateway.resources import Resources
from mediaflow_libs.credentials import cookie_name
from mediaflow_libs.openapi import (
    RETRY_AFTER,
    SECURITY,
    SHARED_SCHEMAS,
    json_body,
    merged,
    security_schemes,
)
from mediaflow_libs.request_bodies import TYPED_BODY, body_schema
from mediaflow_notifier import openapi as notifier_openapi


def _typed_bodies(app: Litestar) -> Iterator[tuple[str, str, type[msgspec.Struct]]]:
    """Each route that reads a typed body: its path, its method, the body's type."""
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            body_type = handler.opt.get(TYPED_BODY)
            if body_type is not None and handler.include_in_schema:
                for method in handler.http_methods:
                    yield route.path_format, method.lower(), body_type


def completed(app: Litestar, session_cookie: str) -> dict[str, Any]:
    """The gateway's own schema (Litestar's, of the route declarations) with what those
    declarations cannot say: the request bodies its routes read (generated from their
    types), the credentials it accepts, ``Retry-After`` on every 429 and 503 (a
    ``ResponseSpec`` has no headers), and the 304 a task's conditional GET answers (its
    ``If-None-Match`` is declared on the route)."""
    schema = app.openapi_schema.to_schema()
    for path, method, body_type in _typed_bodies(app):
        schema["paths"][path][method]["requestBody"] = json_body(body_schema(body_type))
    components = schema.setdefault("components", {})
    # The contract's shapes, which every service's description shares.
    components.setdefault("schemas", {}).update(copy.deepcopy(SHARED_SCHEMAS))
    components.setdefault("securitySchemes", {}).update(security_schemes(session_cookie))
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            for status in ("429", "503"):
                if status in responses:
                    responses[status].setdefault("headers", {})["Retry-After"] = RETRY_AFTER
            if "401" in responses:
                operation["security"] = SECURITY
    get_task = schema["paths"]["/v1/tasks/{task_id}"]["get"]
    get_task["responses"]["304"] = {
        "description": "Not modified: the copy you hold is current",
        "headers": {"ETag": get_task["responses"]["200"]["headers"]["ETag"]},
    }
    return schema


def published(app: Litestar, session_cookie: str) -> dict[str, Any]:
    """The document ``/v1/openapi.json`` serves: every public route of the one origin."""
    return merged(
        completed(app, session_cookie),
        auth_openapi.document(session_cookie),
        notifier_openapi.document(session_cookie),
    )


@get("/v1/openapi.json", include_in_schema=False, media_type=OpenAPIMediaType.OPENAPI_JSON)
async def openapi_schema(
    request: Request[Any, Any, Any], resources: NamedDependency[Resources]
) -> Response[bytes]:
    """The published schema (API.md's routes), from a plain route: Litestar's own schema
    router would claim every unknown path beside it and answer them with HTML."""
    schema = published(request.app, cookie_name(resources.settings.public_url))
    return Response(
        JsonRenderPlugin().render_json(request, schema), media_type=OpenAPIMediaType.OPENAPI_JSON
    )


def _no_schema_router(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    raise NotFoundException()


def openapi_config() -> OpenAPIConfig:
    """The gateway's generated schema, which :func:`openapi_schema` completes and serves."""
    return OpenAPIConfig(
        title="mediaflow",
        version="1",
        description="Turn media links into stored files with live progress.",
        # Litestar mounts a router for its schema pages whatever the configuration; each of
        # its routes (a catch-all among them) answers a problem 404 instead.
        openapi_router=Router(
            "/v1/openapi",
            route_handlers=[],
            include_in_schema=False,
            guards=[_no_schema_router],
        ),
        render_plugins=[JsonRenderPlugin()],
    )
