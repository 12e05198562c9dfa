"""Apply the numbered SQL files in ``migrations/`` in order, once each, under an advisory lock.

Run as ``mediaflow-migrate`` (DATABASE_URL from the environment). Safe to run from
several processes at once: the lock serialises them and applied files are skipped.
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
        for version, name, sql in migration_files():
            digest = hashlib.sha256(sql.encode()).hexdigest()
            if version in done:
                if done[version]["sha256"] != digest:
                    raise RuntimeError(
                        f"{name} changed after it was applied; add a new file instead"
                    )
                continue
            async with con.transaction():
                await con.execute(sql)
                await con.execute(
                    """INSERT INTO public.schema_migrations (version, name, sha256)
                       VALUES ($1, $2, $3)""",
                    version,
                    name,
                    digest,
                )
            applied_now.append(name)
    finally:
        await con.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
        await con.close()
    return applied_now


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
