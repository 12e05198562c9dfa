"""Sessions: opaque 256-bit tokens from the OS CSPRNG, stored only as SHA-256 hashes,
with a sliding idle lifetime and an absolute one."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from mediaflow_libs import db
from mediaflow_libs.credentials import cookie_name
from mediaflow_libs.problems import ProblemError

TOKEN_BYTES = 32
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")
# Sliding expiry is written at most this often per session, not on every request.
_TOUCH_INTERVAL = timedelta(seconds=60)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def user_json(
    user_id: object, email: str, name: str | None, created_at: datetime
) -> dict[str, Any]:
    return {"id": str(user_id), "email": email, "name": name, "created_at": _rfc3339(created_at)}


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class NewSession:
    token: str
    session_id: str
    expires_at: datetime

    def json(self) -> dict[str, str]:
        return {"id": self.session_id, "expires_at": _rfc3339(self.expires_at)}


async def create_session(
    con: db.Connection, user_id: str, idle_ttl: int, absolute_ttl: int
) -> NewSession:
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = datetime.now(UTC)
    idle_expires = now + timedelta(seconds=min(idle_ttl, absolute_ttl))
    session_id = await con.fetchval(
        """INSERT INTO auth.sessions (user_id, token_hash, idle_expires_at, absolute_expires_at)
           VALUES ($1, $2, $3, $4) RETURNING id""",
        user_id,
        _digest(token),
        idle_expires,
        now + timedelta(seconds=absolute_ttl),
    )
    return NewSession(token=token, session_id=str(session_id), expires_at=idle_expires)


async def check_session(
    con: db.Connection, token: str, idle_ttl: int
) -> tuple[dict[str, Any], dict[str, str]]:
    """``(user, session)`` for a valid token; otherwise a 401 naming why."""
    if not _TOKEN_SHAPE.match(token):
        raise ProblemError(401, "session_invalid", "The session token is malformed; sign in again.")
    row = await con.fetchrow(
        """SELECT s.id AS session_id, s.user_id, s.last_seen_at, s.idle_expires_at,
                  s.absolute_expires_at, s.revoked_at, clock_timestamp() AS now,
                  u.email, u.name, u.created_at AS user_created_at, u.disabled_at
           FROM auth.sessions s JOIN auth.users u ON u.id = s.user_id
           WHERE s.token_hash = $1""",
        _digest(token),
    )
    if row is None:
        raise ProblemError(401, "session_invalid", "The session token is unknown; sign in again.")
    if row["revoked_at"] is not None:
        raise ProblemError(401, "session_revoked", "The session was signed out; sign in again.")
    if row["disabled_at"] is not None:
        # Its sessions were revoked with it; one opened by a sign-in racing the disable too.
        raise ProblemError(401, "session_revoked", "The account has been disabled.")
    now = row["now"]
    if now >= row["idle_expires_at"] or now >= row["absolute_expires_at"]:
        raise ProblemError(401, "session_expired", "The session has expired; sign in again.")
    # The session ends at whichever lifetime runs out first; callers cache up to it.
    idle_expires = min(row["idle_expires_at"], row["absolute_expires_at"])
    if now - row["last_seen_at"] >= _TOUCH_INTERVAL:
        idle_expires = min(now + timedelta(seconds=idle_ttl), row["absolute_expires_at"])
        await con.execute(
            "UPDATE auth.sessions SET last_seen_at = $2, idle_expires_at = $3 WHERE id = $1",
            row["session_id"],
            now,
            idle_expires,
        )
    session = {"id": str(row["session_id"]), "expires_at": _rfc3339(idle_expires)}
    user = user_json(row["user_id"], row["email"], row["name"], row["user_created_at"])
    return user, session


async def revoke_session(con: db.Connection, token: str) -> None:
    await con.execute(
        "UPDATE auth.sessions SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL",
        _digest(token),
    )


def session_cookie(public_url: str, token: str, max_age: int) -> str:
    """The Set-Cookie value; every attribute derives from PUBLIC_URL (API.md)."""
    secure = public_url.startswith("https://")
    attributes = [f"{cookie_name(public_url)}={token}", "HttpOnly", "SameSite=Lax", "Path=/"]
    attributes.append(f"Max-Age={max_age}")
    if secure:
        attributes.append("Secure")
    return "; ".join(attributes)


def cleared_cookie(public_url: str) -> str:
    return session_cookie(public_url, "", 0)
