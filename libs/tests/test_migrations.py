from __future__ import annotations

import asyncio

import asyncpg

from mediaflow_libs.migrate import apply_migrations, migration_files


async def test_migrations_are_applied_once_even_concurrently(infra) -> None:  # type: ignore[no-untyped-def]
    # The session database is already migrated: running again, three at once, applies nothing.
    results = await asyncio.gather(*(apply_migrations(infra.database_url) for _ in range(3)))
    assert results == [[], [], []]
    con = await asyncpg.connect(infra.database_url)
    try:
        versions = [
            r["version"]
            for r in await con.fetch("SELECT version FROM public.schema_migrations ORDER BY 1")
        ]
    finally:
        await con.close()
    assert versions == [version for version, _, _ in migration_files()]


async def test_updated_at_moves_on_every_task_change(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        row = await con.fetchrow(
            """INSERT INTO media.tasks (user_id, source_url, cost)
               VALUES (gen_random_uuid(), 'https://x.example/a', 1) RETURNING id, updated_at"""
        )
        updated = await con.fetchval(
            "UPDATE media.tasks SET bytes_done = 5 WHERE id = $1 RETURNING updated_at", row["id"]
        )
    assert updated > row["updated_at"]
