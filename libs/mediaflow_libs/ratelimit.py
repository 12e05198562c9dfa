"""Fixed-window counters in PostgreSQL, so every replica of a service shares them.

A table used here has the columns ``(subject text, window_start timestamptz, hits integer)``
with the primary key ``(subject, window_start)``.
"""

from __future__ import annotations

import math
import random
import re

import asyncpg

_TABLE = re.compile(r"^[a-z_]+\.[a-z_]+$")
_WINDOW = "to_timestamp(floor(extract(epoch FROM now()) / $2) * $2)"


def _checked(table: str) -> str:
    if not _TABLE.match(table):
        raise ValueError(f"not a schema-qualified table name: {table!r}")
    return table


async def seconds_until_allowed(
    con: asyncpg.Connection, table: str, limits: dict[str, int], window: int
) -> int | None:
    """None while every subject is under its limit in the current window; otherwise the
    seconds until that window ends (for ``Retry-After``)."""
    rows = await con.fetch(
        f"""SELECT subject, hits,
                   extract(epoch FROM {_WINDOW} + make_interval(secs => $2) - now()) AS remaining
            FROM {_checked(table)}
            WHERE subject = ANY($1::text[]) AND window_start = {_WINDOW}""",
        list(limits),
        window,
    )
    for row in rows:
        if row["hits"] >= limits[row["subject"]]:
            return max(1, math.ceil(row["remaining"]))
    return None


async def hit(con: asyncpg.Connection, table: str, subjects: list[str], window: int) -> None:
    await con.execute(
        f"""INSERT INTO {_checked(table)} (subject, window_start, hits)
            SELECT unnest($1::text[]), {_WINDOW}, 1
            ON CONFLICT (subject, window_start) DO UPDATE SET hits = {table}.hits + 1""",
        subjects,
        window,
    )
    if random.random() < 0.01:  # old windows are pruned now and then, not on every request
        await con.execute(f"DELETE FROM {table} WHERE window_start < now() - interval '1 day'")


async def reset(con: asyncpg.Connection, table: str, subject: str) -> None:
    await con.execute(f"DELETE FROM {_checked(table)} WHERE subject = $1", subject)
