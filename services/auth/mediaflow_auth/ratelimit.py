"""Fixed-window counters in PostgreSQL, so every replica of a service shares them: the one
rate limit, ``public.take_rate_limit`` (functions/), which task submissions take inside
``media.submit_task``.

A table used here has the columns ``(subject text, window_start timestamptz, hits integer)``
with the primary key ``(subject, window_start)``.
"""

from __future__ import annotations

import re

from mediaflow_libs import db

_TABLE = re.compile(r"^[a-z_]+\.[a-z_]+$")


def _checked(table: str) -> str:
    if not _TABLE.match(table):
        raise ValueError(f"not a schema-qualified table name: {table!r}")
    return table


async def take(con: db.Connection, table: str, limits: dict[str, int], window: int) -> int | None:
    """Count one attempt against every subject before it is made, so that attempts sent all
    at once cannot each see room under the limit: None when every subject stays within its
    limit; otherwise the seconds until the window ends (for ``Retry-After``), the attempt
    not counted."""
    wait: int | None = await con.fetchval(
        "SELECT public.take_rate_limit($1::regclass, $2, $3, $4)",
        _checked(table),
        list(limits),
        list(limits.values()),
        window,
    )
    return wait


async def give_back(con: db.Connection, table: str, subjects: list[str], window: int) -> None:
    """Uncount an attempt :func:`take` counted (one that did not fail after all)."""
    await con.execute(
        "SELECT public.give_back_rate_limit($1::regclass, $2, $3)",
        _checked(table),
        subjects,
        window,
    )


async def reset(con: db.Connection, table: str, subject: str) -> None:
    await con.execute(f"DELETE FROM {_checked(table)} WHERE subject = $1", subject)
