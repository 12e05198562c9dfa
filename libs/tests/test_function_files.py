"""The database's functions: each defined by one file in migrations/functions, applied after
the numbered migrations and again whenever it changes."""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from google.protobuf.message import Message

from libs.tests.support import private_database
from mediaflow_libs import migrate, tasks
from mediaflow_libs.contracts import Task
from mediaflow_libs.task_view import message_view

MIGRATIONS = Path(migrate.__file__).parent / "migrations"
# main before the function files: what databases in use ran.
BEFORE_FUNCTION_FILES = "473dfb8"


async def _definitions(url: str) -> dict[str, str]:
    """Every function and trigger of the database (extensions' aside), by name."""
    con = await asyncpg.connect(url)
    try:
        functions = await con.fetch(
            """SELECT p.oid::regprocedure::text AS name, pg_get_functiondef(p.oid) AS definition
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                 AND NOT EXISTS (SELECT FROM pg_depend d
                                 WHERE d.objid = p.oid AND d.deptype = 'e')"""
        )
        triggers = await con.fetch(
            """SELECT 'trigger ' || tgname AS name, pg_get_triggerdef(oid) AS definition
               FROM pg_trigger WHERE NOT tgisinternal"""
        )
    finally:
        await con.close()
    return {row["name"]: row["definition"] for row in [*functions, *triggers]}


def _files_before() -> Iterator[tuple[int, str, str]]:
    """The numbered migrations as main had them before the function files."""
    listing = subprocess.run(
        ["git", "ls-tree", "--name-only", BEFORE_FUNCTION_FILES, f"{MIGRATIONS}/"],
        capture_output=True,
        text=True,
        check=True,
        cwd=MIGRATIONS,
    ).stdout.split()
    for path in sorted(listing):
        name = Path(path).name
        match = migrate.FILE_PATTERN.match(name)
        if match:
            sql = subprocess.run(
                ["git", "show", f"{BEFORE_FUNCTION_FILES}:./{name}"],
                capture_output=True,
                text=True,
                check=True,
                cwd=MIGRATIONS,
            ).stdout
            yield int(match.group(1)), name, sql


async def test_a_database_migrated_before_the_function_files_ends_up_as_a_fresh_one(
    infra,  # type: ignore[no-untyped-def]
) -> None:
    async with (
        private_database(infra, "functions") as fresh,
        private_database(infra, "functions") as before,
    ):
        await migrate.apply_migrations(fresh)
        # The older database, as main's migrate left it: each file run, its digest recorded.
        con = await asyncpg.connect(before)
        try:
            await con.execute(
                """CREATE TABLE public.schema_migrations (
                       version integer PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            for version, name, sql in _files_before():
                digest = hashlib.sha256(sql.encode()).hexdigest()
                assert migrate.SUPERSEDED_DIGESTS.get(name, digest) == digest, name
                await con.execute(sql)
                await con.execute(
                    "INSERT INTO public.schema_migrations VALUES ($1, $2, $3)",
                    version,
                    name,
                    digest,
                )
        finally:
            await con.close()

        applied = await migrate.apply_migrations(before)

        assert await _definitions(before) == await _definitions(fresh)
        assert "0014_task_event_messages_built_by_the_relay.sql" in applied
        assert await migrate.apply_migrations(before) == []  # digests recorded as they are now


async def test_a_changed_function_file_is_applied_again_and_an_unchanged_one_is_not(
    infra,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with private_database(infra, "functions") as url:
        await migrate.apply_migrations(url)
        assert await migrate.apply_migrations(url) == []
        files = migrate.function_files()
        name, sql = next((n, s) for n, s in files if n == "media.charge_credits")
        changed = sql.replace("RETURN true;", "RETURN true;  -- changed")
        assert changed != sql
        monkeypatch.setattr(
            migrate,
            "function_files",
            lambda: [(n, changed if n == name else s) for n, s in files],
        )

        assert await migrate.apply_migrations(url) == ["functions/media.charge_credits.sql"]
        definitions = await _definitions(url)
        assert "-- changed" in definitions["media.charge_credits(uuid,uuid,integer)"]
        assert await migrate.apply_migrations(url) == []


def test_function_files_come_after_the_functions_they_call() -> None:
    order = [name for name, _ in migrate.function_files()]
    assert order.index("media.submit_task") < order.index("media.submit_tasks")
    assert order.index("public.take_rate_limit") < order.index("media.submit_task")
    assert order.index("public.rate_limit_window") < order.index("public.take_rate_limit")
    assert order == [name for name, _ in migrate.function_files()]


def test_functions_are_defined_only_in_function_files_and_build_no_messages() -> None:
    numbered = list(MIGRATIONS.glob("*.sql"))
    assert numbered
    for path in numbered:
        code = re.sub(r"--[^\n]*", "", path.read_text())
        assert not re.search(r"\bCREATE\s+(OR\s+REPLACE\s+)?(FUNCTION|TRIGGER)\b", code, re.I), (
            f"{path.name}: a function belongs in functions/<schema>.<name>.sql"
        )
    for path in [*numbered, *MIGRATIONS.glob("functions/*.sql")]:
        code = re.sub(r"--[^\n]*|DROP FUNCTION[^;]*;", "", path.read_text())
        # Messages are built in Python from rows; SQL assembles no bytes.
        assert not re.search(r"protobuf|varint|set_byte|'\\x[0-9a-f]*'|bytea\s*\|\|", code, re.I), (
            path.name
        )


def _filled(message: Message, value: Callable[[str, object], object]) -> Message:
    """``message`` with every field set, recursively."""
    for field in message.DESCRIPTOR.fields:
        if field.message_type is not None:
            if field.message_type.full_name == "google.protobuf.Timestamp":
                getattr(message, field.name).FromDatetime(
                    datetime(2026, 12, 3, 15, 4, 5, 678901, tzinfo=UTC)
                )
            else:
                _filled(getattr(message, field.name), value)
        else:
            setattr(message, field.name, value(field.name, field.type))
    return message


def test_a_task_message_is_rebuilt_from_its_json_whole() -> None:
    def value(name: str, kind: object) -> object:
        if kind == 9:  # string
            return f"{name}-value"
        if kind == 1:  # double
            return 12.345
        return 7

    task = _filled(Task(), value)
    assert isinstance(task, Task)
    # The user is the event row's; everything else is in the JSON.
    assert tasks.task_from_json(message_view(task), task.user_id) == task
