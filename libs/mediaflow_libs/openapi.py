"""Pieces of the published OpenAPI document that every service's description shares, and
the merge of those descriptions into the one document the gateway serves at
``/v1/openapi.json`` (API.md is the reference for each piece)."""

from __future__ import annotations

import copy
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from mediaflow_libs.problems import PROBLEM_MEDIA_TYPE

JSON = "application/json"
Document = dict[str, Any]

# Strings the contract gives a format: an answer type's fields hold them as sent.
DATE_TIME = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
UUID = Annotated[str, Meta(extra_json_schema={"format": "uuid"})]


# The user as every service answers it (auth's sign-in, the gateway's /v1/me).
class User(msgspec.Struct):
    id: UUID
    email: str
    name: str | None
    created_at: DATE_TIME


def _nullable(schema: Any) -> Any:
    """``schema`` with each ``anyOf`` of one plain type and null written as the type list
    it means (``{"type": ["string", "null"]}``), as the contract's schemas write it."""
    if isinstance(schema, list):
        return [_nullable(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    choices = schema.get("anyOf")
    if isinstance(choices, list) and len(choices) == 2 and {"type": "null"} in choices:
        (other,) = [choice for choice in choices if choice != {"type": "null"}]
        if isinstance(other.get("type"), str):
            rest = {key: value for key, value in schema.items() if key != "anyOf"}
            return _nullable(rest | other | {"type": [other["type"], "null"]})
    return {key: _nullable(value) for key, value in schema.items()}


def component_schemas(*types: type[msgspec.Struct]) -> dict[str, dict[str, Any]]:
    """The component schemas of answer types and of the types they hold, by type name."""
    _, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    return {name: _nullable(schema) for name, schema in components.items()}


RETRY_AFTER: dict[str, Any] = {
    "description": "Seconds to wait before trying again",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}

# Every problem body (RFC 9457 plus the stable `code`); routes may add fields of their own.
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code", "request_id"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "request_id": {"type": ["string", "null"]},
    },
}

USER_SCHEMA: dict[str, Any] = component_schemas(User)["User"]

# Schemas several services' descriptions refer to: each document carries these exact ones.
SHARED_SCHEMAS: dict[str, dict[str, Any]] = {"Problem": PROBLEM_SCHEMA, "User": USER_SCHEMA}

# A protected route accepts the session cookie or an API key.
SECURITY: list[dict[str, list[str]]] = [{"session": []}, {"apiKey": []}]

# What each status means on any route; a route's own description names its codes.
_PROBLEMS = {
    400: "Malformed: a body that is not JSON (invalid_json), or a request the ingress or the "
    "server cannot read (invalid_request, bad_request)",
    401: "No valid session: session_missing, session_invalid (any token auth does not know, "
    "whatever its length or bytes), session_expired, session_revoked",
    403: "Cross-site: an unsafe request whose Origin is not PUBLIC_URL's, or with no Origin "
    "whose Sec-Fetch-Site is cross-site (csrf_rejected)",
    404: "No such resource (also another user's)",
    409: "Conflict with the resource's state",
    413: "The body is too large (payload_too_large)",
    415: "A JSON route given a body that is not application/json (unsupported_media_type)",
    422: "A parameter or field is not valid",
    429: "Too many requests; see Retry-After",
    503: "A dependency is unavailable (auth_unavailable, …); see Retry-After",
}


# The key of a route handler's ``opt`` naming the problems it can answer, each status with
# the codes it gives ("" for that status's usual description): the published schema lists
# them, beside what the declaration says itself (operation id, summary, answer, headers).
PROBLEMS = "problems"


def usual(*statuses: int) -> dict[int, str]:
    """Problem statuses a route answers with their usual description."""
    return dict.fromkeys(statuses, "")


def security_schemes(session_cookie: str) -> dict[str, Any]:
    """The credentials a protected route accepts (API.md, "Auth")."""
    return {
        "session": {
            "type": "apiKey",
            "in": "cookie",
            "name": session_cookie,
            "description": "The session cookie that sign-up and sign-in set",
        },
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`Authorization: Bearer mfk_…`)",
        },
    }


def problem(status: int, description: str | None = None) -> dict[str, Any]:
    """The response object of a problem+json answer (``Retry-After`` on 429 and 503)."""
    response: dict[str, Any] = {
        "description": description or _PROBLEMS[status],
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if status in (429, 503):
        response["headers"] = {"Retry-After": RETRY_AFTER}
    return response


def problems(*statuses: int) -> dict[str, Any]:
    return {str(status): problem(status) for status in statuses}


def json_body(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": schema}}}


def json_response(description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


def merged(*documents: Document) -> Document:
    """One document of several services' descriptions: the first gives ``info`` and the
    rest; paths and component entries are added, and a path or a component that two
    documents define differently is an error (one of them would be silently wrong)."""
    result = copy.deepcopy(documents[0])
    for document in documents[1:]:
        paths = result.setdefault("paths", {})
        for path, item in document.get("paths", {}).items():
            if path in paths:
                raise ValueError(f"{path} is described twice")
            paths[path] = copy.deepcopy(item)
        components = result.setdefault("components", {})
        for kind, entries in document.get("components", {}).items():
            into = components.setdefault(kind, {})
            for name, entry in entries.items():
                if name in into and into[name] != entry:
                    raise ValueError(f"components.{kind}.{name} differs between documents")
                into[name] = copy.deepcopy(entry)
    return result
