"""``mediaflow admin``: operators' commands, run against the database itself (DATABASE_URL),
never through the public API: grant credits, list accounts, disable or enable one.

Disabling revokes the account's sessions and API keys in the database and announces it on
the broker (AMQP_URL, AMQP_NAMESPACE), as a sign-out everywhere does, so every gateway and
notifier replica drops them from its session cache at once.

Output: what a script reads goes to stdout (a balance, a table, or JSON with ``--json``,
errors included); messages for a person go to stderr. Exit codes, as the user commands':
0 done, 2 bad arguments or configuration, 4 refused (no account has that email), 5 the
database or the broker could not be reached (a disable whose announcement failed is done in
the database; running it again announces it again).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import aio_pika
import asyncpg
from pydantic import Field, ValidationError

from mediaflow_cli import accounts
from mediaflow_libs import credits
from mediaflow_libs.amqp import Topology
from mediaflow_libs.contracts import CredentialRevoked
from mediaflow_libs.settings import CreditSettings

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_REFUSED = 4
EXIT_UNAVAILABLE = 5
MAX_GRANT = 1_000_000
MAX_REASON_LENGTH = 500
CONNECT_TIMEOUT_SECONDS = 10


class AdminSettings(CreditSettings):
    """The services' own variables, read the same way (a gateway pod has them all)."""

    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/mediaflow", description="PostgreSQL DSN"
    )
    amqp_url: str = Field("amqp://guest:guest@127.0.0.1:5672/", description="RabbitMQ URL")
    amqp_namespace: str = Field("media", description="Prefix of exchange and queue names")


class AdminError(Exception):
    def __init__(self, message: str, exit_code: int, code: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.code = code


def _say(message: str) -> None:
    sys.stderr.write(f"{message}\n")


def _out(text: str) -> None:
    sys.stdout.write(f"{text}\n")


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _user_json(row: asyncpg.Record) -> dict[str, Any]:
    found = {
        "id": str(row["id"]),
        "email": row["email"],
        "name": row["name"],
        "created_at": _when(row["created_at"]),
        "disabled_at": _when(row["disabled_at"]),
    }
    if "balance" in row:
        found |= {"balance": row["balance"], "tasks": row["tasks"]}
    return found


async def _connect(settings: AdminSettings) -> asyncpg.Connection:
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
            return await asyncpg.connect(settings.database_url)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise AdminError(
            f"cannot reach the database (DATABASE_URL): {exc}", EXIT_UNAVAILABLE, "unreachable"
        ) from exc


async def _account(con: asyncpg.Connection, email: str) -> asyncpg.Record:
    row = await accounts.find(con, email)
    if row is None:
        raise AdminError(f"no account has the email {email!r}", EXIT_REFUSED, "no_account")
    return row


async def _grant(args: argparse.Namespace, settings: AdminSettings) -> int:
    reason = args.reason.strip()
    if not reason or len(reason) > MAX_REASON_LENGTH:
        raise AdminError(
            f"--reason must be 1 to {MAX_REASON_LENGTH} characters", EXIT_USAGE, "usage"
        )
    if not 1 <= args.amount <= MAX_GRANT:
        raise AdminError(f"N must be a whole number from 1 to {MAX_GRANT}", EXIT_USAGE, "usage")
    con = await _connect(settings)
    try:
        async with con.transaction():
            user = await _account(con, args.email)
            balance = await credits.grant(
                con, str(user["id"]), args.amount, reason, settings.signup_credits
            )
    finally:
        await con.close()
    _say(f"granted {credits.amount(args.amount)} to {user['email']} ({reason}); balance {balance}")
    if args.json:
        _out(json.dumps({"user": _user_json(user), "granted": args.amount, "balance": balance}))
    else:
        _out(str(balance))
    return EXIT_OK


async def _list(args: argparse.Namespace, settings: AdminSettings) -> int:
    con = await _connect(settings)
    try:
        rows = await accounts.list_all(con)
    finally:
        await con.close()
    users = [_user_json(row) for row in rows]
    if args.json:
        _out(json.dumps({"items": users}))
        return EXIT_OK
    # Tab-separated, one account a line: readable, and cut/awk-able.
    _out("\t".join(("email", "id", "created_at", "balance", "tasks", "status")))
    for user in users:
        balance = "-" if user["balance"] is None else str(user["balance"])
        status = "disabled" if user["disabled_at"] else "active"
        _out(
            "\t".join(
                (user["email"], user["id"], user["created_at"], balance, str(user["tasks"]), status)
            )
        )
    _say(_count(len(users), "account"))
    return EXIT_OK


async def _set_disabled(args: argparse.Namespace, settings: AdminSettings, disable: bool) -> int:
    con = await _connect(settings)
    try:
        async with con.transaction():
            user = await _account(con, args.email)
            if disable:
                sessions, keys = await accounts.disable(con, str(user["id"]))
            else:
                await accounts.enable(con, str(user["id"]))
            user = await _account(con, args.email)
    finally:
        await con.close()
    if not disable:
        _say(f"enabled {user['email']}: it can sign in again")
        _out(json.dumps({"user": _user_json(user)}) if args.json else user["email"])
        return EXIT_OK
    _say(
        f"disabled {user['email']}: {_count(sessions, 'session')} and "
        f"{_count(keys, 'API key')} revoked"
    )
    await _announce(settings, str(user["id"]))
    if args.json:
        _out(
            json.dumps(
                {"user": _user_json(user), "sessions_revoked": sessions, "api_keys_revoked": keys}
            )
        )
    else:
        _out(user["email"])
    return EXIT_OK


async def _announce(settings: AdminSettings, user_id: str) -> None:
    # Imported here: the sessions module brings the web framework, a second to import, and
    # only this command needs it.
    from mediaflow_libs.revocations import announce_revocation

    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
            connection = await aio_pika.connect(settings.amqp_url)
            async with connection:
                await announce_revocation(
                    connection,
                    Topology(settings.amqp_namespace),
                    CredentialRevoked(user_id=user_id),
                )
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
        raise AdminError(
            "the account is disabled, but the broker (AMQP_URL) could not be told: services may "
            f"accept its credentials for up to AUTH_CACHE_SECONDS; run the command again ({exc})",
            EXIT_UNAVAILABLE,
            "announcement_failed",
        ) from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediaflow admin",
        description="Operators' commands, against the database (DATABASE_URL).",
        epilog="Exit codes: 0 done, 2 bad arguments or configuration, 4 no account has that "
        "email, 5 the database or the broker cannot be reached.",
    )
    parser.add_argument("--json", action="store_true", help="JSON on stdout")
    areas = parser.add_subparsers(dest="area", required=True)
    credit = areas.add_parser("credits", help="credit balances").add_subparsers(
        dest="action", required=True
    )
    grant = credit.add_parser(
        "grant", help="give an account N credits (a ledger row with the reason)"
    )
    grant.add_argument("email")
    grant.add_argument("amount", metavar="N", type=int, help=f"credits to add, 1 to {MAX_GRANT}")
    grant.add_argument("--reason", required=True, help="why, kept in the ledger")
    users = areas.add_parser("users", help="accounts").add_subparsers(dest="action", required=True)
    users.add_parser("list", help="every account with its balance, tasks and status")
    for name, what in (
        ("disable", "refuse its sign-ins; revoke its sessions and API keys at once"),
        ("enable", "let a disabled account sign in again"),
    ):
        users.add_parser(name, help=what).add_argument("email")
    for sub in (grant, *users.choices.values()):
        # Accepted after the command too: `mediaflow admin users list --json`.
        sub.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="JSON on stdout"
        )
    return parser


async def run(argv: list[str]) -> int:
    """Run one admin command (``argv`` after ``admin``); returns its exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage error (already printed)
        return int(exc.code or 0)
    try:
        settings = AdminSettings()
    except ValidationError as exc:
        _say(f"mediaflow admin: invalid configuration\n{exc}")
        return EXIT_USAGE
    commands: dict[tuple[str, str], Callable[[], Awaitable[int]]] = {
        ("credits", "grant"): lambda: _grant(args, settings),
        ("users", "list"): lambda: _list(args, settings),
        ("users", "disable"): lambda: _set_disabled(args, settings, disable=True),
        ("users", "enable"): lambda: _set_disabled(args, settings, disable=False),
    }
    try:
        try:
            return await commands[(args.area, args.action)]()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            # A database without mediaflow's tables, a connection lost midway, ...
            raise AdminError(f"the database refused: {exc}", EXIT_UNAVAILABLE, "database") from exc
    except AdminError as exc:
        _say(f"mediaflow admin: {exc}")
        if args.json:
            error = {"code": exc.code, "message": str(exc), "exit_code": exc.exit_code}
            _out(json.dumps({"error": error}))
        return exc.exit_code


def main(argv: list[str]) -> int:
    try:
        return asyncio.run(run(argv))
    except KeyboardInterrupt:
        return 130


def register(commands: Any) -> None:
    """Add ``admin`` to the ``mediaflow`` command's subcommands (an argparse subparsers
    action whose commands run ``args.handler(args)``); its own parser reads the rest."""
    parser = commands.add_parser(
        "admin",
        help="operators' commands against the database (mediaflow admin --help)",
        add_help=False,
    )
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    parser.set_defaults(handler=lambda args: run(args.rest))
