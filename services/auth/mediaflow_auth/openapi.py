"""The OpenAPI description of auth's public routes (API.md, "Auth"), for the document the
gateway publishes at ``/v1/openapi.json``, generated from the routes' declarations: their
path, method, status code, operation id, summary, security and response headers; the body
each reads and the problems each answers (its ``opt``); the answer's schema from its return
type (:mod:`mediaflow_auth.answers`) and the body's from its type (:mod:`mediaflow_auth.bodies`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, get_args

import msgspec
from litestar import Response
from litestar.handlers import HTTPRouteHandler
from litestar.params import KwargDefinition

from mediaflow_auth import routes
from mediaflow_libs.openapi import (
    PROBLEMS,
    SHARED_SCHEMAS,
    component_schemas,
    json_body,
    json_response,
    problem,
    security_schemes,
)
from mediaflow_libs.request_bodies import TYPED_BODY, body_schema

_PATH_PARAMETER = re.compile(r"\{(\w+):\w+\}")


def _answer_type(handler: HTTPRouteHandler) -> type[msgspec.Struct] | None:
    """The type a route answers with: its return type, or what its ``Response`` holds."""
    annotation = handler.parsed_fn_signature.return_type.annotation
    if getattr(annotation, "__origin__", None) is Response:
        (annotation,) = get_args(annotation)
    return (
        annotation
        if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)
        else None
    )


def _problems(handler: HTTPRouteHandler) -> dict[str, Any]:
    answers = {}
    for status, codes in handler.opt[PROBLEMS].items():
        response = problem(status)
        if codes:
            response["description"] = f"{response['description']}: {codes}"
        answers[str(status)] = response
    return answers


def _success(handler: HTTPRouteHandler) -> dict[str, Any]:
    description = handler.response_description or ""
    answer_type = _answer_type(handler)
    response: dict[str, Any] = (
        json_response(description, {"$ref": f"#/components/schemas/{answer_type.__name__}"})
        if answer_type is not None
        else {"description": description}
    )
    headers = {
        header.name: {
            "description": header.description,
            "required": header.required,
            "schema": {"type": "string"},
        }
        for header in handler.response_headers or ()
    }
    if headers:
        response["headers"] = headers
    return response


def _description(handler: HTTPRouteHandler, parameter: str) -> str | None:
    declared = handler.parsed_fn_signature.parameters[parameter].kwarg_definition
    return declared.description if isinstance(declared, KwargDefinition) else None


def _parameters(handler: HTTPRouteHandler, path: str) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": _description(handler, name),
            "schema": {"type": "string"},
        }
        for name in _PATH_PARAMETER.findall(path)
    ]


def _operation(handler: HTTPRouteHandler, path: str) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": handler.operation_id,
        "summary": handler.summary,
        "tags": list(handler.tags or ()),
        "responses": {str(handler.status_code): _success(handler), **_problems(handler)},
    }
    if parameters := _parameters(handler, path):
        operation["parameters"] = parameters
    if (body_type := handler.opt.get(TYPED_BODY)) is not None:
        operation["requestBody"] = json_body(body_schema(body_type))
    operation["security"] = handler.security
    return operation


def _public_handlers() -> Iterator[HTTPRouteHandler]:
    for handler in routes.route_handlers:
        if handler.include_in_schema:
            yield handler


def document(session_cookie: str) -> dict[str, Any]:
    """auth's routes, with the schemas and security schemes they refer to."""
    paths: dict[str, dict[str, Any]] = {}
    answer_types = []
    for handler in _public_handlers():
        if (answer_type := _answer_type(handler)) is not None:
            answer_types.append(answer_type)
        for path in handler.paths:
            for method in sorted(handler.http_methods):
                item = paths.setdefault(_PATH_PARAMETER.sub(r"{\1}", path), {})
                item[method.lower()] = _operation(handler, path)
    return {
        "paths": paths,
        "components": {
            "schemas": {**component_schemas(*answer_types), **SHARED_SCHEMAS},
            "securitySchemes": security_schemes(session_cookie),
        },
    }
