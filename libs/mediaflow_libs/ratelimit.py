"""Fixed-window counters in PostgreSQL, so every replica of a service shares them.

A table used here has the columns ``(subject text, window_start timestamptz, hits integer)``
with the primary key ``(subject, window_start)``.
"""

from __future__ import annotations

import math
import random
import re

from mediaflow_libs import db

_TABLE = re.compile(r"^[a-z_]+\.[a-z_]+$")
_WINDOW = "to_timestamp(floor(extract(epoch FROM now()) / $2) * $2)"


def _checked(table: str) -> str:
    if not _TABLE.match(table):
        raise ValueError(f"not a schema-qualified table name: {table!r}")
    return table


async def take(con: db.Connection, table: str, limits: dict[str, int], window: int) -> int | None:
    """Count one attempt against every subject before it is made, so that attempts sent all
    at once cannot each see room under the limit: None when every subject stays within its
    limit; otherwise the seconds until the window ends (for ``Retry-After``), the attempt
    not counted."""
    rows = await con.fetch(
        f"""INSERT INTO {_checked(table)} (subject, window_start, hits)
            SELECT unnest($1::text[]), {_WINDOW}, 1
            ON CONFLICT (subject, window_start) DO UPDATE SET hits = {table}.hits + 1
            RETURNING subject, hits,
                      extract(epoch FROM window_start + make_interval(secs => $2) - now())
                          AS remaining""",
        list(limits),
        window,
    )
    if random.random() < 0.01:  # old windows are pruned now and then, not on every request
        await con.execute(f"DELETE FROM {table} WHERE window_start < now() - interval '1 day'")
    over = [row for row in rows if row["hits"] > limits[row["subject"]]]
    if not over:
        return None
    await give_back(con, table, list(limits), window)
    remaining: float = max(row["remaining"] for row in over)
    return max(1, math.ceil(remaining))


async def give_back(con: db.Connection, table: str, subjects: list[str], window: int) -> None:
    """Uncount an attempt :func:`take` counted (one that did not fail after all)."""
    await con.execute(
        f"""UPDATE {_checked(table)} SET hits = hits - 1
            WHERE subject = ANY($1::text[]) AND window_start = {_WINDOW} AND hits > 0""",
        subjects,
        window,
    )


async def reset(con: db.Connection, table: str, subject: str) -> None:
    await con.execute(f"DELETE FROM {_checked(table)} WHERE subject = $1", subject)
