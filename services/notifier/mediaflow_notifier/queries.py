"""The notifier's reads of ``media.tasks`` and ``media.task_events``; every one is
scoped to the caller's user id, so another user's task can never be returned."""

from __future__ import annotations

import asyncpg

# A snapshot is the task row with the id of its latest event, the cursor to resume from.
# Snapshots come ordered by that id, so the cursor a client holds after them is the highest.


async def active_task_snapshots(pool: asyncpg.Pool, user_id: str) -> list[asyncpg.Record]:
    """The user's tasks that have not finished."""
    async with pool.acquire() as con:
        return await con.fetch(
            """SELECT t.*, e.id AS event_id
               FROM media.tasks t
               LEFT JOIN LATERAL (
                   SELECT id FROM media.task_events WHERE task_id = t.id ORDER BY id DESC LIMIT 1
               ) e ON true
               WHERE t.user_id = $1 AND t.status IN ('queued', 'running')
               ORDER BY e.id NULLS FIRST, t.created_at""",
            user_id,
        )


async def named_task_snapshots(
    pool: asyncpg.Pool, user_id: str, task_ids: frozenset[str]
) -> list[asyncpg.Record]:
    """The named tasks that belong to the user, whatever their status, unless deleted."""
    async with pool.acquire() as con:
        return await con.fetch(
            """SELECT t.*, e.id AS event_id
               FROM media.tasks t
               LEFT JOIN LATERAL (
                   SELECT id FROM media.task_events WHERE task_id = t.id ORDER BY id DESC LIMIT 1
               ) e ON true
               WHERE t.user_id = $1 AND t.id = ANY($2::uuid[]) AND t.deleted_at IS NULL
               ORDER BY e.id NULLS FIRST, t.created_at""",
            user_id,
            list(task_ids),
        )


async def is_known_cursor(pool: asyncpg.Pool, user_id: str, event_id: int) -> bool:
    """Whether ``event_id`` is one of the user's stored events (and so can be replayed from)."""
    async with pool.acquire() as con:
        known: bool = await con.fetchval(
            "SELECT EXISTS (SELECT 1 FROM media.task_events WHERE id = $1 AND user_id = $2)",
            event_id,
            user_id,
        )
    return known


async def events_after(
    pool: asyncpg.Pool,
    user_id: str,
    task_ids: frozenset[str] | None,
    after_id: int,
    limit: int,
) -> list[asyncpg.Record]:
    """Up to ``limit`` of the user's events after ``after_id``, oldest first."""
    async with pool.acquire() as con:
        return await con.fetch(
            """SELECT id, task_id, task FROM media.task_events
               WHERE user_id = $1 AND id > $2 AND ($3::uuid[] IS NULL OR task_id = ANY($3::uuid[]))
               ORDER BY id LIMIT $4""",
            user_id,
            after_id,
            None if task_ids is None else list(task_ids),
            limit,
        )
