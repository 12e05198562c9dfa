"""The OpenAPI description of auth's public routes (API.md, "Auth"), for the document the
gateway publishes at ``/v1/openapi.json``. The request bodies' schemas are generated from
their types (:mod:`mediaflow_auth.bodies`); the answers are written from the contract."""

from __future__ import annotations

from typing import Any

from mediaflow_auth.bodies import CreateApiKey, SignIn, SignUp
from mediaflow_libs.openapi import (
    SECURITY,
    SHARED_SCHEMAS,
    json_body,
    json_response,
    problem,
    problems,
    security_schemes,
)
from mediaflow_libs.request_bodies import body_schema

_TAGS = ["auth"]
_SCHEMAS: dict[str, dict[str, Any]] = {
    "Session": {
        "title": "Session",
        "type": "object",
        "required": ["id", "expires_at"],
        "properties": {
            "id": {"type": "string"},
            # null when the credential is an API key, which does not expire
            "expires_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "SignedIn": {
        "title": "SignedIn",
        "type": "object",
        "required": ["user", "session"],
        "properties": {
            "user": {"$ref": "#/components/schemas/User"},
            "session": {"$ref": "#/components/schemas/Session"},
        },
    },
    "SignedUp": {
        "title": "SignedUp",
        "type": "object",
        "required": ["user"],
        "properties": {
            "user": {"$ref": "#/components/schemas/User"},
            "session": {"$ref": "#/components/schemas/Session"},
        },
    },
    "ApiKey": {
        "title": "ApiKey",
        "type": "object",
        "required": ["id", "name", "created_at", "last_used_at"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "name": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "last_used_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "NewApiKey": {
        "title": "NewApiKey",
        "type": "object",
        "required": ["id", "name", "key", "created_at"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "name": {"type": "string"},
            "key": {
                "type": "string",
                "pattern": "^mfk_[A-Za-z0-9_-]{43}$",
                "description": "The key itself: shown this once, never again",
            },
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "ApiKeyPage": {
        "title": "ApiKeyPage",
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/ApiKey"}}
        },
    },
}

_SET_COOKIE = {
    "Set-Cookie": {
        "description": "The session cookie (`HttpOnly; SameSite=Lax; Path=/`, `Secure` on https)",
        "required": True,
        "schema": {"type": "string"},
    }
}
_CLEARED_COOKIE = {
    "Set-Cookie": {
        "description": "The session cookie, cleared",
        "required": True,
        "schema": {"type": "string"},
    }
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _with(codes: str, status: int) -> dict[str, Any]:
    response = problem(status)
    response["description"] = f"{response['description']}: {codes}"
    return response


def _operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    secured: bool = False,
    body: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": _TAGS,
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = body
    # Sign-up and sign-in take no credential: an empty requirement says so explicitly.
    operation["security"] = SECURITY if secured else []
    return operation


def document(session_cookie: str) -> dict[str, Any]:
    """auth's routes, with the schemas and security schemes they refer to."""
    # 400 and 503 can come from the ingress on any route (unreadable request, auth down).
    protected = problems(400, 401, 503)
    unsafe_json = problems(400, 403, 413, 415, 503)
    paths = {
        "/v1/auth/sign-up": {
            "post": _operation(
                "AuthSignUp",
                "Create an account and sign in",
                {
                    "201": json_response("Signed up", _ref("SignedUp"), headers=_SET_COOKIE),
                    **unsafe_json,
                    "409": _with("email_taken", 409),
                    "422": _with("invalid_email, weak_password, invalid_name", 422),
                },
                body=json_body(body_schema(SignUp)),
            )
        },
        "/v1/auth/sign-in": {
            "post": _operation(
                "AuthSignIn",
                "Sign in with an email and password (a new session)",
                {
                    "200": json_response("Signed in", _ref("SignedIn"), headers=_SET_COOKIE),
                    **unsafe_json,
                    "401": _with("invalid_credentials", 401),
                    "403": _with(
                        "account_disabled (the right password, an account the operator "
                        "disabled), or csrf_rejected",
                        403,
                    ),
                    "429": _with("rate_limited (failed sign-ins)", 429),
                },
                body=json_body(body_schema(SignIn)),
            )
        },
        "/v1/auth/sign-out": {
            "post": _operation(
                "AuthSignOut",
                "Revoke the presented session and clear its cookie",
                {
                    "204": {"description": "Signed out", "headers": _CLEARED_COOKIE},
                    **problems(400, 403, 503),
                },
                # Signing out works (and changes nothing) without a session too.
            )
        },
        "/v1/auth/session": {
            "get": _operation(
                "AuthGetSession",
                "The signed-in user and their session",
                {"200": json_response("The session", _ref("SignedIn")), **protected},
                secured=True,
            )
        },
        "/v1/auth/sessions": {
            "delete": _operation(
                "AuthRevokeAllSessions",
                "Revoke every session of the signed-in user",
                {
                    "204": {"description": "Every session revoked", "headers": _CLEARED_COOKIE},
                    **problems(400, 401, 403, 503),
                },
                secured=True,
            )
        },
        "/v1/auth/api-keys": {
            "post": _operation(
                "AuthCreateApiKey",
                "Create an API key (its `key` is shown once)",
                {
                    "201": json_response("Created", _ref("NewApiKey")),
                    **problems(400, 401, 403, 413, 415, 503),
                    "422": _with("invalid_name", 422),
                },
                secured=True,
                body=json_body(body_schema(CreateApiKey)),
            ),
            "get": _operation(
                "AuthListApiKeys",
                "The signed-in user's API keys (never the keys themselves)",
                {"200": json_response("The keys", _ref("ApiKeyPage")), **protected},
                secured=True,
            ),
        },
        "/v1/auth/api-keys/{key_id}": {
            "delete": _operation(
                "AuthDeleteApiKey",
                "Delete an API key: it stops working at once",
                {
                    "204": {"description": "Deleted"},
                    **problems(400, 401, 403, 503),
                    "404": _with("api_key_not_found", 404),
                },
                secured=True,
                parameters=[
                    {
                        "name": "key_id",
                        "in": "path",
                        "required": True,
                        "description": "The key's id",
                        "schema": {"type": "string"},
                    }
                ],
            )
        },
    }
    return {
        "paths": paths,
        "components": {
            "schemas": {**SHARED_SCHEMAS, **_SCHEMAS},
            "securitySchemes": security_schemes(session_cookie),
        },
    }
