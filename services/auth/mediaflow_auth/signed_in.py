"""The session check of auth's routes, as their ``signed_in`` dependency, and what the
routes' declarations share for the published schema."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Request
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency, Provide

from mediaflow_auth import api_keys
from mediaflow_auth import sessions as session_store
from mediaflow_auth.resources import Resources
from mediaflow_libs.credentials import presented_credential
from mediaflow_libs.openapi import SECURITY, usual
from mediaflow_libs.problems import ProblemError

# What every route's declaration shares, for the published schema: 400 and 503 can come
# from the ingress on any route (an unreadable request, auth down); sign-up and sign-in
# take no credential, which an empty requirement says explicitly.
DOCUMENTED: dict[str, Any] = {"tags": ["auth"]}
PUBLIC = DOCUMENTED | {"security": []}
PROTECTED = DOCUMENTED | {"security": SECURITY}
UNSAFE_JSON = usual(400, 403, 413, 415, 503)
SET_COOKIE = ResponseHeader(
    name="Set-Cookie",
    description="The session cookie (`HttpOnly; SameSite=Lax; Path=/`, `Secure` on https)",
    required=True,
    documentation_only=True,
)
CLEARED_COOKIE = ResponseHeader(
    name="Set-Cookie",
    description="The session cookie, cleared",
    required=True,
    documentation_only=True,
)


async def check_credential(resources: Resources, credential: str | None) -> dict[str, Any]:
    if not credential:
        raise ProblemError(401, "session_missing", "Sign in first: no session was sent.")
    async with resources.pool.acquire() as con:
        if api_keys.looks_like_api_key(credential):
            user, session = await api_keys.check(con, credential)
        else:
            user, session = await session_store.check_session(
                con, credential, resources.settings.session_idle_ttl_seconds
            )
    return {"user": user, "session": session}


async def signed_in(
    request: Request[Any, Any, Any], resources: NamedDependency[Resources]
) -> dict[str, Any]:
    """The ``signed_in`` dependency of the routes that need a session: the caller's user and
    session, or 401, before the route reads anything."""
    checked = await check_credential(
        resources, presented_credential(request, resources.settings.public_url)
    )
    structlog.contextvars.bind_contextvars(user_id=checked["user"]["id"])
    return checked


SIGNED_IN = {"signed_in": Provide(signed_in)}
