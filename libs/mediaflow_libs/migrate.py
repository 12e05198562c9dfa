"""Apply the numbered SQL files in ``migrations/`` in order, once each, then the function
files in ``migrations/functions/``, each again whenever it changed; under an advisory lock.

Numbered files hold the schema (tables, indexes, data); a function file,
``<schema>.<name>.sql``, holds the current definition of one function (``CREATE OR
REPLACE``, with the trigger that calls it, if any). A change of signature drops the old
one in a numbered file. Run as ``mediaflow-migrate`` (DATABASE_URL from the environment).
Safe to run from several processes at once: the lock serialises them and applied files are
skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import sys
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import asyncpg

# Any fixed number works; it only has to be the same for every migrating process.
ADVISORY_LOCK_KEY = 0x6D65646961666C6F  # "mediaflo"
FILE_PATTERN = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
FUNCTION_FILE_PATTERN = re.compile(r"^([a-z_]+\.[a-z0-9_]+)\.sql$")
# Numbered files edited after they ran, only to move their functions to function files: the
# digest each had then. A database that applied one is as the file is now once the function
# files have been applied; its recorded digest is updated.
SUPERSEDED_DIGESTS = {
    "0001_initial.sql": "5c3c044cb7416bb844830171e4b21bce127d9a636b056827227065f5e1f38bbe",
    "0004_worker_leases_and_cache.sql": (
        "0a9bb2a4740a1df797e96afd667f06bbaec0d006170186a38726b576674ed17d"
    ),
    "0005_submission_in_one_statement.sql": (
        "91b76385c8b6e000fe99ab90d8e8a7473a1f95907c2380a76d04176dcc2ffeea"
    ),
    "0006_task_events_commit_in_id_order.sql": (
        "1eed6746a8d7a137edca8386fed93e0b507f28a3e67a772bd15867ff9ee45135"
    ),
    "0007_submissions_in_batches.sql": (
        "debbf01eeead124ea3aca3e56a54d27920cb7be0d68c6d9fdcc4ab1ea5e490df"
    ),
    "0009_submissions_refuse_before_writing.sql": (
        "65e0c71c03d4ec8c1483cf60c6a8a26cd6bd00f1fe941b8c5ec620bb4a3e65c8"
    ),
}
_COMMENT = re.compile(r"--[^\n]*")


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped with this package, in order."""
    found = []
    for entry in resources.files("mediaflow_libs.migrations").iterdir():
        match = FILE_PATTERN.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    versions = [version for version, _, _ in found]
    if len(versions) != len(set(versions)):
        raise RuntimeError("two migration files share a version number")
    return sorted(found)


def function_files() -> list[tuple[str, str]]:
    """(name, sql) of every function file, each after the functions its code names (comments
    aside), otherwise by name: a deterministic order that respects their dependencies."""
    directory = resources.files("mediaflow_libs.migrations").joinpath("functions")
    found = {}
    for entry in directory.iterdir():
        match = FUNCTION_FILE_PATTERN.match(entry.name)
        if match:
            found[match.group(1)] = entry.read_text(encoding="utf-8")
    needs = {
        name: {
            other
            for other in found
            if other != name
            and re.search(rf"\b{re.escape(other)}\s*\(", _COMMENT.sub("", sql), re.IGNORECASE)
        }
        for name, sql in found.items()
    }
    ordered: list[tuple[str, str]] = []
    while needs:
        ready = sorted(name for name, wanted in needs.items() if not wanted)
        if not ready:
            raise RuntimeError(f"function files that need each other: {sorted(needs)}")
        for name in ready:
            ordered.append((name, found[name]))
            del needs[name]
        for wanted in needs.values():
            wanted.difference_update(ready)
    return ordered


def _digest(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


async def create_database_if_missing(dsn: str) -> None:
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    admin_dsn = urlunsplit(parts._replace(path="/postgres"))
    con = await asyncpg.connect(admin_dsn)
    try:
        if not await con.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()


async def apply_migrations(dsn: str) -> list[str]:
    """Apply pending migrations; return the names applied by this call."""
    applied_now = []
    con = await asyncpg.connect(dsn)
    try:
        await con.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        await con.execute(
            """CREATE TABLE IF NOT EXISTS public.schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   sha256 text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {
            row["version"]: row
            for row in await con.fetch("SELECT version, name, sha256 FROM public.schema_migrations")
        }
        await con.execute(
            """CREATE TABLE IF NOT EXISTS public.schema_functions (
                   name text PRIMARY KEY,
                   sha256 text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        for version, name, sql in migration_files():
            digest = _digest(sql)
            if version in done:
                recorded = done[version]["sha256"]
                if recorded == SUPERSEDED_DIGESTS.get(name):
                    await con.execute(
                        "UPDATE public.schema_migrations SET sha256 = $2 WHERE version = $1",
                        version,
                        digest,
                    )
                elif recorded != digest:
                    raise RuntimeError(
                        f"{name} changed after it was applied; add a new file instead"
                    )
                continue
            async with con.transaction():
                if _COMMENT.sub("", sql).strip():  # one left as comments only runs nothing
                    await con.execute(sql)
                await con.execute(
                    """INSERT INTO public.schema_migrations (version, name, sha256)
                       VALUES ($1, $2, $3)""",
                    version,
                    name,
                    digest,
                )
            applied_now.append(name)
        applied_now += await _apply_functions(con)
    finally:
        await con.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
        await con.close()
    return applied_now


async def _apply_functions(con: asyncpg.Connection) -> list[str]:
    """Apply the function files that are new or changed since they were applied, all in one
    transaction, so that functions changed together are replaced together."""
    recorded = {
        row["name"]: row["sha256"]
        for row in await con.fetch("SELECT name, sha256 FROM public.schema_functions")
    }
    changed = [(name, sql) for name, sql in function_files() if recorded.get(name) != _digest(sql)]
    async with con.transaction():
        for name, sql in changed:
            await con.execute(sql)
            await con.execute(
                """INSERT INTO public.schema_functions (name, sha256) VALUES ($1, $2)
                   ON CONFLICT (name) DO UPDATE SET sha256 = $2, applied_at = now()""",
                name,
                _digest(sql),
            )
    return [f"functions/{name}.sql" for name, _ in changed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--create-database", action="store_true", help="create the database first")
    args = parser.parse_args()
    dsn = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/mediaflow")
    if args.create_database:
        asyncio.run(create_database_if_missing(dsn))
    applied = asyncio.run(apply_migrations(dsn))
    sys.stdout.write(f"migrations applied: {', '.join(applied) or 'none pending'}\n")


if __name__ == "__main__":
    main()
