"""API keys: ``mfk_`` + 256 random bits, shown once, stored as SHA-256."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime
from typing import Any

import asyncpg

from mediaflow_auth.sessions import user_json
from mediaflow_libs import db
from mediaflow_libs.problems import ProblemError

PREFIX = "mfk_"
KEY_PATTERN = r"^mfk_[A-Za-z0-9_-]{43}$"
_KEY_SHAPE = re.compile(KEY_PATTERN)
MAX_NAME_LENGTH = 100


def looks_like_api_key(credential: str) -> bool:
    return credential.startswith(PREFIX)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _rfc3339(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def key_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "created_at": _rfc3339(row["created_at"]),
        "last_used_at": _rfc3339(row["last_used_at"]),
    }


async def create(con: db.Connection, user_id: str, name: str) -> dict[str, Any]:
    key = PREFIX + secrets.token_urlsafe(32)
    row = await con.fetchrow(
        """INSERT INTO auth.api_keys (user_id, name, key_hash) VALUES ($1, $2, $3)
           RETURNING id, name, created_at, last_used_at""",
        user_id,
        name,
        _digest(key),
    )
    assert row is not None
    body = key_json(row)
    del body["last_used_at"]
    return body | {"key": key}


async def list_for(con: db.Connection, user_id: str) -> list[dict[str, Any]]:
    rows = await con.fetch(
        """SELECT id, name, created_at, last_used_at FROM auth.api_keys
           WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at, id""",
        user_id,
    )
    return [key_json(row) for row in rows]


async def delete(con: db.Connection, user_id: str, key_id: str) -> bytes:
    """The deleted key's hash, for the revocation announcement. The row stays, revoked, so
    that the key is answered ``session_revoked`` from then on."""
    key_hash = await con.fetchval(
        """UPDATE auth.api_keys SET revoked_at = now()
           WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING key_hash""",
        key_id,
        user_id,
    )
    if key_hash is None:
        raise ProblemError(404, "api_key_not_found", "No such API key.")
    return bytes(key_hash)


async def check(con: db.Connection, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(user, session)`` for a valid key (``session.expires_at`` is null: keys do not expire)."""
    if not _KEY_SHAPE.match(key):
        raise ProblemError(401, "session_invalid", "The API key is malformed.")
    digest = _digest(key)
    row = await con.fetchrow(
        """UPDATE auth.api_keys k SET last_used_at = now()
           FROM auth.users u
           WHERE u.id = k.user_id AND k.key_hash = $1 AND k.revoked_at IS NULL
             AND u.disabled_at IS NULL
           RETURNING k.id AS key_id, u.id AS user_id, u.email, u.name, u.created_at""",
        digest,
    )
    if row is None:
        if await con.fetchval("SELECT true FROM auth.api_keys WHERE key_hash = $1", digest):
            raise ProblemError(
                401, "session_revoked", "The API key was deleted, or its account disabled."
            )
        raise ProblemError(401, "session_invalid", "The API key is unknown.")
    user = user_json(row["user_id"], row["email"], row["name"], row["created_at"])
    return user, {"id": str(row["key_id"]), "expires_at": None}
