"""auth's routes: sign-up, sign-in and sign-out, the session, and the internal session
check gateway and notifier call; the API key routes are :mod:`.api_key_routes`."""

from __future__ import annotations

import hashlib
from typing import Any

import asyncpg
import jwt
import msgspec
import structlog
from litestar import Request, Response, delete, get, post
from litestar.di import NamedDependency

from mediaflow_auth import api_key_routes, api_keys, passwords, ratelimit
from mediaflow_auth import sessions as session_store
from mediaflow_auth.answers import SignedIn, SignedUp
from mediaflow_auth.bodies import MAX_EMAIL_LENGTH, SessionCheck, SignIn, SignUp
from mediaflow_auth.resources import Resources
from mediaflow_auth.settings import AuthSettings
from mediaflow_auth.signed_in import (
    CLEARED_COOKIE,
    PROTECTED,
    PUBLIC,
    SET_COOKIE,
    SIGNED_IN,
    UNSAFE_JSON,
    check_credential,
)
from mediaflow_libs import db
from mediaflow_libs.contracts import CredentialRevoked
from mediaflow_libs.credentials import credential_digest, presented_credential
from mediaflow_libs.openapi import PROBLEMS, usual
from mediaflow_libs.problems import ProblemError
from mediaflow_libs.request_bodies import TYPED_BODY, read_body
from mediaflow_libs.service_tokens import check_service_token

log = structlog.get_logger(__name__)

SIGN_IN_FAILURES = "auth.sign_in_failures"


def _sign_in_account(email: str) -> str:
    """How sign-in limits name an account: its email as sign-in matches it (any case), or a
    digest of a longer one (no account has it, and a rate-limit key must stay short)."""
    normalised = email.strip().lower()
    if len(normalised) <= MAX_EMAIL_LENGTH:
        return normalised
    return "sha256:" + hashlib.sha256(normalised.encode()).hexdigest()


def _set_cookie(response: Response[Any], header_value: str) -> Response[Any]:
    response.headers["Set-Cookie"] = header_value
    response.headers["Cache-Control"] = "no-store"
    return response


async def _new_session(
    con: db.Connection, settings: AuthSettings, user_id: Any
) -> session_store.NewSession:
    return await session_store.create_session(
        con, user_id, settings.session_idle_ttl_seconds, settings.session_absolute_ttl_seconds
    )


def _signed_in(
    settings: AuthSettings,
    user: Any,
    session: session_store.NewSession,
    answer: type[SignedIn | SignedUp],
    status_code: int,
) -> Response[Any]:
    """The answer of a sign-up or sign-in: the user, the session, and its cookie."""
    payload = {
        "user": session_store.user_json(
            user["id"], user["email"], user["name"], user["created_at"]
        ),
        "session": session.json(),
    }
    cookie = session_store.session_cookie(
        settings.public_url, session.token, settings.session_absolute_ttl_seconds
    )
    return _set_cookie(Response(msgspec.convert(payload, answer), status_code=status_code), cookie)


@post(
    "/v1/auth/sign-up",
    status_code=201,
    operation_id="AuthSignUp",
    summary="Create an account and sign in",
    response_description="Signed up",
    response_headers=[SET_COOKIE],
    opt={
        TYPED_BODY: SignUp,
        PROBLEMS: UNSAFE_JSON
        | {409: "email_taken", 422: "invalid_email, weak_password, invalid_name"},
    },
    **PUBLIC,
)
async def sign_up(
    request: Request[Any, Any, Any], resources: NamedDependency[Resources]
) -> Response[SignedUp]:
    body = await read_body(request, SignUp)
    password_hash = await passwords.hash_password(body.password)
    settings = resources.settings
    async with resources.pool.acquire() as con, con.transaction():
        try:
            user = await con.fetchrow(
                """INSERT INTO auth.users (email, name, password_hash) VALUES ($1, $2, $3)
                   RETURNING id, email, name, created_at""",
                body.email,
                body.name,
                password_hash,
            )
        except asyncpg.UniqueViolationError as exc:
            raise ProblemError(409, "email_taken", "An account with this email exists.") from exc
        assert user is not None
        session = await _new_session(con, settings, user["id"])
    log.info("auth.signed_up", user_id=str(user["id"]))
    return _signed_in(settings, user, session, SignedUp, status_code=201)


@post(
    "/v1/auth/sign-in",
    status_code=200,
    operation_id="AuthSignIn",
    summary="Sign in with an email and password (a new session)",
    response_description="Signed in",
    response_headers=[SET_COOKIE],
    opt={
        TYPED_BODY: SignIn,
        PROBLEMS: UNSAFE_JSON
        | {
            401: "invalid_credentials",
            403: "account_disabled (the right password, an account the operator disabled), "
            "or csrf_rejected",
            429: "rate_limited (failed sign-ins)",
        },
    },
    **PUBLIC,
)
async def sign_in(
    request: Request[Any, Any, Any], resources: NamedDependency[Resources]
) -> Response[SignedIn]:
    body = await read_body(request, SignIn)
    email, password = body.email, body.password
    settings = resources.settings
    account = _sign_in_account(email)
    address = request.client.host if request.client else "unknown"
    # The pair is what one guesser at one address runs into; the account limit is far
    # higher, and a throttled pair's attempts are not counted, so only failures from many
    # addresses reach it (a distributed guesser), never one address alone: the owner,
    # elsewhere, still signs in. The address limit stops one address trying many accounts.
    pair = f"account_ip:{address}|{account}"
    subjects = {f"ip:{address}": settings.sign_in_max_failures_per_ip}
    if account:
        # An email that is not text names no account: nothing to protect, and one shared
        # key would let anyone's junk lock every such attempt out.
        subjects |= {
            pair: settings.sign_in_max_failures_per_account_and_ip,
            f"account:{account}": settings.sign_in_max_failures_per_account,
        }
    window = settings.sign_in_window_seconds
    async with resources.pool.acquire() as con:
        # Counted as a failure up front (and given back if it succeeds): attempts sent at
        # once cannot each find room under the limit.
        wait = await ratelimit.take(con, SIGN_IN_FAILURES, subjects, window)
        if wait is not None:
            log.info("auth.sign_in_refused", code="rate_limited")
            raise ProblemError(
                429,
                "rate_limited",
                "Too many failed sign-ins; wait before trying again.",
                headers={"Retry-After": str(wait)},
            )
        user = await con.fetchrow(
            """SELECT id, email, name, created_at, password_hash, disabled_at FROM auth.users
               WHERE lower(email) = lower($1)""",
            email.strip(),
        )
    stored_hash = user["password_hash"] if user else None
    if not await passwords.verify_password(stored_hash, password) or user is None:
        log.info("auth.sign_in_refused", code="invalid_credentials")
        raise ProblemError(401, "invalid_credentials", "The email or password is wrong.")
    if user["disabled_at"] is not None:
        # Told only to whoever knows the password; it stays counted as a failed attempt.
        log.info("auth.sign_in_refused", code="account_disabled", user_id=str(user["id"]))
        raise ProblemError(
            403,
            "account_disabled",
            "This account has been disabled by the operator; it cannot sign in.",
        )
    async with resources.pool.acquire() as con, con.transaction():
        # The owner's own mistakes from here are forgotten; failures others made against
        # the account stay counted (signing in must not reset a distributed guesser).
        await ratelimit.reset(con, SIGN_IN_FAILURES, pair)
        await ratelimit.give_back(con, SIGN_IN_FAILURES, [s for s in subjects if s != pair], window)
        if passwords.needs_rehash(user["password_hash"]):
            await con.execute(
                "UPDATE auth.users SET password_hash = $2 WHERE id = $1",
                user["id"],
                await passwords.hash_password(password),
            )
        session = await _new_session(con, settings, user["id"])
    log.info("auth.signed_in", user_id=str(user["id"]))
    return _signed_in(settings, user, session, SignedIn, status_code=200)


@post(
    "/v1/auth/sign-out",
    status_code=204,
    operation_id="AuthSignOut",
    summary="Revoke the presented session and clear its cookie",
    response_description="Signed out",
    response_headers=[CLEARED_COOKIE],
    opt={PROBLEMS: usual(400, 403, 503)},
    # Signing out works (and changes nothing) without a session too.
    **PUBLIC,
)
async def sign_out(
    request: Request[Any, Any, Any], resources: NamedDependency[Resources]
) -> Response[None]:
    credential = presented_credential(request, resources.settings.public_url)
    if credential and not api_keys.looks_like_api_key(credential):
        async with resources.pool.acquire() as con:
            await session_store.revoke_session(con, credential)
        await resources.announce(CredentialRevoked(credential_sha256=credential_digest(credential)))
    return _set_cookie(
        Response(None, status_code=204), session_store.cleared_cookie(resources.settings.public_url)
    )


@delete(
    "/v1/auth/sessions",
    status_code=204,
    dependencies=SIGNED_IN,
    operation_id="AuthRevokeAllSessions",
    summary="Revoke every session of the signed-in user",
    response_description="Every session revoked",
    response_headers=[CLEARED_COOKIE],
    opt={PROBLEMS: usual(400, 401, 403, 503)},
    **PROTECTED,
)
async def revoke_all_sessions(
    signed_in: NamedDependency[dict[str, Any]], resources: NamedDependency[Resources]
) -> Response[None]:
    user = signed_in["user"]
    async with resources.pool.acquire() as con:
        await con.execute(
            "UPDATE auth.sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
            user["id"],
        )
    await resources.announce(CredentialRevoked(user_id=user["id"]))
    log.info("auth.sessions_revoked")
    return _set_cookie(
        Response(None, status_code=204), session_store.cleared_cookie(resources.settings.public_url)
    )


@get(
    "/v1/auth/session",
    dependencies=SIGNED_IN,
    operation_id="AuthGetSession",
    summary="The signed-in user and their session",
    response_description="The session",
    opt={PROBLEMS: usual(400, 401, 503)},
    **PROTECTED,
)
async def current_session(signed_in: NamedDependency[dict[str, Any]]) -> SignedIn:
    return msgspec.convert(signed_in, SignedIn)


@post("/internal/v1/sessions/verify", status_code=200, include_in_schema=False)
async def verify(
    request: Request[Any, Any, Any], resources: NamedDependency[Resources]
) -> dict[str, Any]:
    """Called by gateway and notifier with a service token; never routed by the ingress."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    try:
        caller = check_service_token(resources.settings.service_secret.get_secret_value(), token)
    except jwt.InvalidTokenError as exc:
        if scheme.lower() != "bearer":
            log.warning("auth.verify_without_service_token")
        else:
            log.warning("auth.verify_bad_service_token", error=str(exc))
        raise ProblemError(
            403, "service_unauthorized", "A valid service token is required."
        ) from exc
    # Callers send no credential longer than MAX_CREDENTIAL_LENGTH; within this limit any
    # credential gets its answer (unknown ones 401 session_invalid), and callers take the
    # 413 past it for an unknown credential too, never for auth failing.
    structlog.contextvars.bind_contextvars(caller=caller)
    body = await read_body(request, SessionCheck, max_bytes=4096)
    return await check_credential(resources, body.credential)


route_handlers = [
    sign_up,
    sign_in,
    sign_out,
    current_session,
    revoke_all_sessions,
    verify,
    *api_key_routes.route_handlers,
]
