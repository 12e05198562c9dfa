"""auth's API key routes: create (the key shown once), list, delete."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
import structlog
from litestar import Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import PathParameter

from mediaflow_auth import api_keys
from mediaflow_auth.answers import ApiKeyPage, NewApiKey
from mediaflow_auth.bodies import CreateApiKey
from mediaflow_auth.resources import Resources
from mediaflow_auth.signed_in import PROTECTED, SIGNED_IN
from mediaflow_libs.contracts import CredentialRevoked
from mediaflow_libs.openapi import PROBLEMS, usual
from mediaflow_libs.problems import ProblemError
from mediaflow_libs.request_bodies import TYPED_BODY, read_body

log = structlog.get_logger(__name__)


@post(
    "/v1/auth/api-keys",
    status_code=201,
    dependencies=SIGNED_IN,
    operation_id="AuthCreateApiKey",
    summary="Create an API key (its `key` is shown once)",
    response_description="Created",
    opt={
        TYPED_BODY: CreateApiKey,
        PROBLEMS: usual(400, 401, 403, 413, 415, 503) | {422: "invalid_name"},
    },
    **PROTECTED,
)
async def create_api_key(
    request: Request[Any, Any, Any],
    signed_in: NamedDependency[dict[str, Any]],
    resources: NamedDependency[Resources],
) -> Response[NewApiKey]:
    user = signed_in["user"]
    body = await read_body(request, CreateApiKey)
    async with resources.pool.acquire() as con:
        created = await api_keys.create(con, user["id"], body.name)
    log.info("auth.api_key_created", api_key_id=created["id"])
    return Response(
        msgspec.convert(created, NewApiKey),
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


@get(
    "/v1/auth/api-keys",
    dependencies=SIGNED_IN,
    operation_id="AuthListApiKeys",
    summary="The signed-in user's API keys (never the keys themselves)",
    response_description="The keys",
    opt={PROBLEMS: usual(400, 401, 503)},
    **PROTECTED,
)
async def list_api_keys(
    signed_in: NamedDependency[dict[str, Any]], resources: NamedDependency[Resources]
) -> ApiKeyPage:
    user = signed_in["user"]
    async with resources.pool.acquire() as con:
        keys = await api_keys.list_for(con, user["id"])
    return msgspec.convert({"items": keys}, ApiKeyPage)


@delete(
    "/v1/auth/api-keys/{key_id:str}",
    status_code=204,
    dependencies=SIGNED_IN,
    operation_id="AuthDeleteApiKey",
    summary="Delete an API key: it stops working at once",
    response_description="Deleted",
    opt={PROBLEMS: usual(400, 401, 403, 503) | {404: "api_key_not_found"}},
    **PROTECTED,
)
async def delete_api_key(
    key_id: Annotated[str, PathParameter(description="The key's id")],
    signed_in: NamedDependency[dict[str, Any]],
    resources: NamedDependency[Resources],
) -> None:
    user = signed_in["user"]
    try:
        key_uuid = str(uuid.UUID(key_id))
    except ValueError as exc:
        raise ProblemError(404, "api_key_not_found", "No such API key.") from exc
    async with resources.pool.acquire() as con:
        key_hash = await api_keys.delete(con, user["id"], key_uuid)
    await resources.announce(CredentialRevoked(credential_sha256=key_hash.hex()))
    log.info("auth.api_key_deleted", api_key_id=key_uuid)


route_handlers = [create_api_key, list_api_keys, delete_api_key]
