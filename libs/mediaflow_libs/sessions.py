"""Session checks shared by gateway and notifier, and the service tokens that
authenticate internal calls.

A 401 means one thing: the caller's session is not valid. When auth cannot
answer (down, slow, breaker open) the answer is 503 ``auth_unavailable``. Whatever
a client sends as its credential is never taken for auth failing: only auth's own
faults count towards the circuit breaker.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import httpx
import jwt
import structlog
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from prometheus_client import Counter

from mediaflow_libs.amqp import Topology
from mediaflow_libs.contracts import CredentialRevoked
from mediaflow_libs.problems import ProblemError
from mediaflow_libs.settings import SessionCheckSettings

log = structlog.get_logger(__name__)

SESSION_CHECKS = Counter(
    "session_checks_total", "Session checks against auth by outcome", ["outcome"]
)
SESSION_FAILURE_CODES = frozenset(
    {"session_missing", "session_invalid", "session_expired", "session_revoked"}
)
SERVICE_TOKEN_AUDIENCE = "mediaflow-internal"  # noqa: S105 - an audience name, not a secret
_CACHE_LIMIT = 100_000
SERVICE_TOKEN_LIFETIME_SECONDS = 120
AUTH_RETRY_AFTER_SECONDS = 2
AUTH_KEEPALIVE_SECONDS = 2.0  # below uvicorn's keep-alive timeout (5 s) on auth's side


def cookie_name(public_url: str) -> str:
    """``__Host-mf_session`` behind https, ``mf_session`` otherwise (API.md)."""
    return "__Host-mf_session" if urlsplit(public_url).scheme == "https" else "mf_session"


def issue_service_token(secret: str, service: str) -> str:
    now = int(time.time())
    claims = {
        "iss": service,
        "aud": SERVICE_TOKEN_AUDIENCE,
        "iat": now,
        "exp": now + SERVICE_TOKEN_LIFETIME_SECONDS,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def check_service_token(secret: str, token: str) -> str:
    """The calling service's name, or :class:`jwt.InvalidTokenError`."""
    claims = jwt.decode(
        token,
        secret,
        algorithms=["HS256"],
        audience=SERVICE_TOKEN_AUDIENCE,
        options={"require": ["exp", "iat", "iss", "aud"]},
    )
    return str(claims["iss"])


@dataclass(frozen=True)
class Identity:
    user_id: str
    email: str
    name: str | None
    created_at: str
    session_id: str
    expires_at: str | None  # None for API keys, which do not expire

    def user_json(self) -> dict[str, Any]:
        return {
            "id": self.user_id,
            "email": self.email,
            "name": self.name,
            "created_at": self.created_at,
        }


# Auth issues session tokens of 43 URL-safe base64 characters and API keys of 47 (``mfk_``
# and 43 more). A credential longer than this or with any other character is none that auth
# issued: it is refused without asking auth, so that no junk, however large, reaches it.
# The room to spare lets auth change its formats without a lockstep deploy of its callers.
MAX_CREDENTIAL_LENGTH = 256
_CREDENTIAL_SHAPE = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_CREDENTIAL_LENGTH}}}")


def could_be_credential(value: str) -> bool:
    """Whether ``value`` has the shape of a credential auth issues (else: session_invalid)."""
    return _CREDENTIAL_SHAPE.fullmatch(value) is not None


def credential_digest(credential: str) -> str:
    """How auth stores a credential and how revocations name it: hex SHA-256."""
    return hashlib.sha256(credential.encode()).hexdigest()


def _bearer(request: Request[Any, Any, Any]) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def presented_credential(request: Request[Any, Any, Any], public_url: str) -> str | None:
    """The bearer token or session cookie the request carries, if any."""
    return _bearer(request) or request.cookies.get(cookie_name(public_url)) or None


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CROSS_SITE_REFUSED = Counter(
    "http_cross_site_refused_total", "Unsafe requests refused as sent by another site's page"
)


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else url


def check_same_origin(connection: ASGIConnection[Any, Any, Any, Any], public_url: str) -> None:
    """Cross-site defence for every unsafe request, whatever its credentials (none, cookie or
    bearer key), sign-up and sign-in included: a browser names the page's origin in
    ``Origin`` (or, when a privacy setting strips it, ``Referer``); anything but PUBLIC_URL's
    origin is refused. A request naming neither is refused when its ``Sec-Fetch-Site`` says
    another page sent it. Clients that send none of the three (the CLI, scripts) are not
    browsers, so no page is behind them, and they pass."""
    if connection.scope.get("method", "GET") in SAFE_METHODS:
        return
    headers = connection.headers
    claimed = headers.get("origin") or headers.get("referer")
    if claimed is not None:
        if _origin_of(claimed) == _origin_of(public_url):
            return
        source = _origin_of(claimed)[:200]
    else:
        fetched_from = headers.get("sec-fetch-site", "same-origin").lower()
        if fetched_from in ("same-origin", "none"):  # "none": the user's own navigation
            return
        source = f"Sec-Fetch-Site: {fetched_from[:40]}"
    CROSS_SITE_REFUSED.inc()
    log.warning("csrf.rejected", claimed_origin=source)
    raise ProblemError(
        403, "csrf_rejected", "This request came from another site's page and was refused."
    )


def refuse_cross_site(
    public_url: str,
) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]:
    """:func:`check_same_origin` as an app-wide guard: it runs on every route before the
    handler, its dependencies or the body are touched."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        check_same_origin(connection, public_url)

    return guard


class CircuitBreaker:
    """Spares auth, and the requests that would wait on it, calls that are bound to fail.

    Closed, it lets every call through and counts consecutive faults; ``threshold`` of them
    open it. Open, it refuses calls until ``reset_seconds`` have passed, then lets one trial
    call through (half-open) and refuses the others meanwhile: a success closes it, a fault
    opens it again for another ``reset_seconds``. A trial that never reports back is replaced
    by another one after ``reset_seconds``. Only faults of auth itself are recorded as such
    (see :meth:`SessionClient._ask_auth`); any answer is a success.
    """

    def __init__(
        self, threshold: int, reset_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._faults = 0
        self._opened_at: float | None = None  # or the start of the latest trial

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def allow(self) -> bool:
        if self._opened_at is None:
            return True
        now = self._clock()
        if now - self._opened_at < self.reset_seconds:
            return False
        self._opened_at = now  # this call is the trial; the next one waits a period
        return True

    def record_success(self) -> None:
        self._faults, self._opened_at = 0, None

    def record_fault(self) -> None:
        self._faults += 1
        if self._faults >= self.threshold:
            self._opened_at = self._clock()


class SessionClient:
    def __init__(
        self,
        *,
        auth_url: str,
        service_name: str,
        service_secret: str,
        timeout_seconds: float,
        breaker_failures: int,
        breaker_reset_seconds: float,
        cache_seconds: float = 0.0,
    ) -> None:
        # auth (uvicorn) closes a connection idle for 5 s; a check sent on it just then
        # fails (ReadError) and would be a 503 for nobody's fault. Idle connections are
        # dropped here well before that (httpx's default is the same 5 s: a race).
        self._http = httpx.AsyncClient(
            base_url=auth_url,
            timeout=timeout_seconds,
            limits=httpx.Limits(keepalive_expiry=AUTH_KEEPALIVE_SECONDS),
        )
        self._service_name = service_name
        self._service_secret = service_secret
        self._breaker = CircuitBreaker(breaker_failures, breaker_reset_seconds)
        self._cache_seconds = cache_seconds
        # credential digest -> (identity, monotonic expiry); only valid answers are kept.
        self._cache: dict[str, tuple[Identity, float]] = {}
        self._asking: dict[str, asyncio.Future[Identity]] = {}  # digest -> check under way
        self._revocations = 0  # revocation announcements received so far

    @classmethod
    def from_settings(
        cls, settings: SessionCheckSettings, *, service_name: str, service_secret: str
    ) -> SessionClient:
        return cls(
            auth_url=settings.auth_internal_url,
            service_name=service_name,
            service_secret=service_secret,
            timeout_seconds=settings.auth_timeout_seconds,
            breaker_failures=settings.auth_breaker_failures,
            breaker_reset_seconds=settings.auth_breaker_reset_seconds,
            cache_seconds=settings.auth_cache_seconds,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _done_asking(self, digest: str) -> Callable[[asyncio.Future[Identity]], None]:
        def done(asking: asyncio.Future[Identity]) -> None:
            if self._asking.get(digest) is asking:
                del self._asking[digest]
            if not asking.cancelled():
                asking.exception()  # retrieved, even when every caller has gone

        return done

    def forget(self, revoked: CredentialRevoked) -> None:
        self._revocations += 1
        self._asking.clear()  # checks under way may predate the revocation: ask afresh
        if revoked.credential_sha256:
            self._cache.pop(revoked.credential_sha256, None)
        if revoked.user_id:
            for key in [k for k, (who, _) in self._cache.items() if who.user_id == revoked.user_id]:
                self._cache.pop(key, None)

    def forget_all(self) -> None:
        self._revocations += 1
        self._asking.clear()
        self._cache.clear()

    async def verify(self, credential: str) -> Identity:
        if not could_be_credential(credential):
            SESSION_CHECKS.labels("malformed").inc()
            raise ProblemError(401, "session_invalid", _DETAILS["session_invalid"])
        digest = credential_digest(credential)
        cached = self._cache.get(digest)
        if cached and cached[1] > time.monotonic():
            SESSION_CHECKS.labels("cached").inc()
            return cached[0]
        # Requests of one session that arrive together (a cache entry just expired) share
        # one question to auth instead of each asking it.
        asking = self._asking.get(digest)
        if asking is None:
            asking = asyncio.create_task(self._ask_auth(credential))
            self._asking[digest] = asking
            asking.add_done_callback(self._done_asking(digest))
        else:
            SESSION_CHECKS.labels("joined").inc()
        revocations_seen = self._revocations
        identity = await asyncio.shield(asking)
        lifetime = min(self._cache_seconds, _seconds_left(identity.expires_at))
        # An answer given before a revocation arrived is used once, never kept.
        if lifetime > 0 and revocations_seen == self._revocations:
            if len(self._cache) > _CACHE_LIMIT:
                self._cache.clear()  # crude but bounded; entries are cheap to refill
            self._cache[digest] = (identity, time.monotonic() + lifetime)
        return identity

    async def _ask_auth(self, credential: str) -> Identity:
        if not self._breaker.allow():
            SESSION_CHECKS.labels("breaker_open").inc()
            raise _auth_unavailable("the circuit breaker is open")
        token = issue_service_token(self._service_secret, self._service_name)
        try:
            response = await self._http.post(
                "/internal/v1/sessions/verify",
                json={"credential": credential},
                headers={"authorization": f"Bearer {token}"},
            )
        except httpx.TimeoutException as exc:
            return self._fault("timeout", exc)
        except httpx.HTTPError as exc:
            return self._fault("unreachable", exc)
        status = response.status_code
        if status >= 500:
            return self._fault(f"status_{status}", None)
        # Whatever else auth answers, it answered: nothing a client sends can open the
        # breaker for everyone else.
        self._breaker.record_success()
        if status == 200:
            SESSION_CHECKS.labels("valid").inc()
            body = response.json()
            user, session = body["user"], body["session"]
            return Identity(
                user_id=user["id"],
                email=user["email"],
                name=user.get("name"),
                created_at=user["created_at"],
                session_id=session["id"],
                expires_at=session.get("expires_at"),
            )
        code = _problem_code(response)
        if status == 401 and code in SESSION_FAILURE_CODES:
            SESSION_CHECKS.labels(code).inc()
            raise ProblemError(401, code, _DETAILS[code])
        if status in _REFUSALS_OF_THE_CREDENTIAL:
            # auth would not even look the credential up (too large, not a string, ...):
            # it is none auth knows.
            SESSION_CHECKS.labels("session_invalid").inc()
            log.info("session_check.credential_refused", status=status, code=code)
            raise ProblemError(401, "session_invalid", _DETAILS["session_invalid"])
        # Our own service token refused, or an answer that says nothing about the session:
        # not the client's fault, so never a 401 (and no outage of auth either).
        SESSION_CHECKS.labels(f"status_{status}").inc()
        log.error("session_check.unexpected_answer", status=status, code=code)
        raise _auth_unavailable(f"status_{status}")

    def _fault(self, reason: str, exc: Exception | None) -> Identity:
        self._breaker.record_fault()
        SESSION_CHECKS.labels(reason).inc()
        log.warning(
            "session_check.auth_unavailable", reason=reason, error=repr(exc) if exc else None
        )
        raise _auth_unavailable(reason)


# What auth's verify answers about the credential it was given rather than about itself.
_REFUSALS_OF_THE_CREDENTIAL = frozenset({400, 404, 413, 422})


def _seconds_left(expires_at: str | None) -> float:
    """Seconds until a session's ``expires_at`` (RFC 3339), infinite for none (API keys),
    zero when it cannot be read: a cached check must never outlive the session."""
    if expires_at is None:
        return math.inf
    try:
        expiry = datetime.fromisoformat(expires_at)
    except ValueError:
        return 0.0
    if expiry.tzinfo is None:
        return 0.0
    return (expiry - datetime.now(UTC)).total_seconds()


_DETAILS = {
    "session_missing": "Sign in first: no session cookie or bearer token was sent.",
    "session_invalid": "The session token is unknown or malformed; sign in again.",
    "session_expired": "The session has expired; sign in again.",
    "session_revoked": "The session was signed out; sign in again.",
}


def _problem_code(response: httpx.Response) -> str | None:
    try:
        code = response.json().get("code")
    except ValueError:
        return None
    return code if isinstance(code, str) else None


def _auth_unavailable(reason: str) -> ProblemError:
    return ProblemError(
        503,
        "auth_unavailable",
        f"Sessions cannot be checked right now ({reason}); try again shortly.",
        headers={"Retry-After": str(AUTH_RETRY_AFTER_SECONDS)},
    )


async def require_identity(
    request: Request[Any, Any, Any], client: SessionClient, public_url: str
) -> Identity:
    credential = presented_credential(request, public_url)
    if credential is None:
        SESSION_CHECKS.labels("session_missing").inc()
        raise ProblemError(401, "session_missing", _DETAILS["session_missing"])
    identity = await client.verify(credential)
    structlog.contextvars.bind_contextvars(user_id=identity.user_id)
    return identity


async def listen_for_revocations(
    connection: AbstractRobustConnection,
    topology: Topology,
    client: SessionClient,
    also: Callable[[CredentialRevoked], None] | None = None,
) -> None:
    """Evict revoked credentials from ``client``'s cache as auth announces them (and pass
    each announcement to ``also``). Runs until cancelled; after a reconnect the whole cache
    is dropped, since announcements may have been missed meanwhile."""
    connection.reconnect_callbacks.add(lambda *_: client.forget_all())
    channel = await connection.channel()
    exchange = await channel.declare_exchange(
        topology.revocations_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange)
    async with queue.iterator() as messages:
        async for message in messages:
            async with message.process():
                revoked = CredentialRevoked.FromString(message.body)
                client.forget(revoked)
                if also is not None:
                    also(revoked)


async def announce_revocation(
    connection: AbstractConnection, topology: Topology, revoked: CredentialRevoked
) -> None:
    """Tell every gateway and notifier replica to drop a credential from its cache."""
    channel = await connection.channel()
    try:
        exchange = await channel.get_exchange(topology.revocations_exchange, ensure=False)
        await exchange.publish(aio_pika.Message(revoked.SerializeToString()), routing_key="")
    finally:
        await channel.close()
