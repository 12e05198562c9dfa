"""Operators' view of the accounts (``mediaflow admin``): find, list, disable, enable.

A disabled account cannot sign in, and every session and API key it had is revoked in the
same transaction; the caller announces the revocation so that no service's session cache
goes on accepting them."""

from __future__ import annotations

import asyncpg

from mediaflow_libs import db


async def find(con: db.Connection, email: str) -> asyncpg.Record | None:
    """The account of ``email``, whatever its case."""
    return await con.fetchrow(
        """SELECT id, email, name, created_at, disabled_at FROM auth.users
           WHERE lower(email) = lower($1)""",
        email.strip(),
    )


async def list_all(con: db.Connection) -> list[asyncpg.Record]:
    """Every account, oldest first, with its balance (null: never opened) and task count."""
    return await con.fetch(
        """SELECT u.id, u.email, u.name, u.created_at, u.disabled_at, a.balance,
                  (SELECT count(*) FROM media.tasks t
                   WHERE t.user_id = u.id AND t.deleted_at IS NULL) AS tasks
           FROM auth.users u LEFT JOIN media.credit_accounts a ON a.user_id = u.id
           ORDER BY u.created_at, u.id"""
    )


async def disable(con: db.Connection, user_id: str) -> tuple[int, int]:
    """Disable the account and revoke its sessions and API keys; returns how many of each
    were revoked. Must run inside a transaction. Disabling again revokes whatever is new."""
    await con.execute(
        "UPDATE auth.users SET disabled_at = coalesce(disabled_at, now()) WHERE id = $1", user_id
    )
    sessions = await con.fetchval(
        """WITH revoked AS (UPDATE auth.sessions SET revoked_at = now()
                            WHERE user_id = $1 AND revoked_at IS NULL RETURNING 1)
           SELECT count(*) FROM revoked""",
        user_id,
    )
    keys = await con.fetchval(
        """WITH revoked AS (UPDATE auth.api_keys SET revoked_at = now()
                            WHERE user_id = $1 AND revoked_at IS NULL RETURNING 1)
           SELECT count(*) FROM revoked""",
        user_id,
    )
    return int(sessions), int(keys)


async def enable(con: db.Connection, user_id: str) -> None:
    """Let the account sign in again (its revoked sessions and keys stay revoked)."""
    await con.execute("UPDATE auth.users SET disabled_at = NULL WHERE id = $1", user_id)
