"""Session checks shared by gateway and notifier: a client of auth's verify endpoint that
caches valid answers, asks once for requests that arrive together, and stops asking while
auth is failing.

A 401 means one thing: the caller's session is not valid. When auth cannot
answer (down, slow, breaker open) the answer is 503 ``auth_unavailable``. Whatever
a client sends as its credential is never taken for auth failing: only auth's own
faults count towards the circuit breaker.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from litestar import Request
from prometheus_client import Counter

from mediaflow_libs.circuit_breaker import CircuitBreaker
from mediaflow_libs.contracts import CredentialRevoked
from mediaflow_libs.credentials import could_be_credential, credential_digest, presented_credential
from mediaflow_libs.problems import ProblemError
from mediaflow_libs.service_tokens import issue_service_token
from mediaflow_libs.settings import SessionCheckSettings

log = structlog.get_logger(__name__)

SESSION_CHECKS = Counter(
    "session_checks_total", "Session checks against auth by outcome", ["outcome"]
)
SESSION_FAILURE_CODES = frozenset(
    {"session_missing", "session_invalid", "session_expired", "session_revoked"}
)
_CACHE_LIMIT = 100_000
AUTH_RETRY_AFTER_SECONDS = 2
AUTH_KEEPALIVE_SECONDS = 2.0  # below uvicorn's keep-alive timeout (5 s) on auth's side


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
        clock: Callable[[], float] = time.monotonic,
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
        self._clock = clock
        self._breaker = CircuitBreaker(breaker_failures, breaker_reset_seconds, clock)
        self._cache_seconds = cache_seconds
        # credential digest -> (identity, monotonic expiry); only valid answers are kept.
        self._cache: dict[str, tuple[Identity, float]] = {}
        self._asking: dict[str, asyncio.Future[Identity]] = {}  # digest -> check under way
        self._revocations = 0  # revocation announcements received so far

    @classmethod
    def from_settings(
        cls,
        settings: SessionCheckSettings,
        *,
        service_name: str,
        service_secret: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> SessionClient:
        return cls(
            auth_url=settings.auth_internal_url,
            service_name=service_name,
            service_secret=service_secret,
            timeout_seconds=settings.auth_timeout_seconds,
            breaker_failures=settings.auth_breaker_failures,
            breaker_reset_seconds=settings.auth_breaker_reset_seconds,
            cache_seconds=settings.auth_cache_seconds,
            clock=clock,
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
        if cached and cached[1] > self._clock():
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
            self._cache[digest] = (identity, self._clock() + lifetime)
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
