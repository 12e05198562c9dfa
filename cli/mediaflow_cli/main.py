"""The mediaflow command's entry point: the subcommands, and every failure turned into one
line on stderr and an exit code."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable

import httpx

from mediaflow_cli import account, diagnose, keys, tasks
from mediaflow_cli.client import ApiError, CorruptDownload
from mediaflow_cli.command import (
    EXIT_AUTH,
    EXIT_INTERRUPTED,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CliError,
    Commands,
    root_parser,
    warn,
)

DESCRIPTION = """\
Turn media links into stored files, from a terminal.

  mediaflow sign-up you@example.com
  mediaflow submit https://host/video.mp4      # live progress, then the file here
  mediaflow list

Results go to stdout (ids, paths, keys; --json for everything as JSON), messages and progress
to stderr. The session is saved in ~/.config/mediaflow/session.json (MEDIAFLOW_CONFIG);
MEDIAFLOW_API_KEY, when set, is used instead."""


def _register_admin(commands: Commands) -> None:
    """Operators' commands parse their own arguments, and their module (database and broker
    clients: over a second of imports) is loaded only when one of them runs."""
    parser = commands.add_parser(
        "admin",
        help="operators' commands against the database (mediaflow admin --help)",
        add_help=False,
        # No option is its own: every argument after `admin`, `--help` included, is admin's.
        prefix_chars="\0",
    )
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    parser.set_defaults(handler=_run_admin)


async def _run_admin(args: argparse.Namespace) -> int:
    from mediaflow_cli import admin

    return await admin.run((["--json"] if args.json else []) + args.rest)


# Each module adds its subcommands here.
REGISTRARS: tuple[Callable[[Commands], None], ...] = (
    account.register,
    tasks.register,
    keys.register,
    diagnose.register,
    _register_admin,
)

AUTH_HINT = "sign in with `mediaflow sign-in EMAIL` (or set MEDIAFLOW_API_KEY)"


def build_parser() -> argparse.ArgumentParser:
    parser = root_parser(DESCRIPTION)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for register in REGISTRARS:
        register(commands)
    return parser


def _failure(exc: Exception) -> CliError:
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, ApiError):
        message = f"{exc.detail} ({exc.status} {exc.code})"
        if exc.retry_after:
            message += f"; retry after {exc.retry_after} s"
        if exc.status == 401:
            return CliError(f"{message}; {AUTH_HINT}", EXIT_AUTH, exc.code)
        if exc.status == 403:
            return CliError(message, EXIT_AUTH, exc.code)
        if exc.status < 500:
            return CliError(message, EXIT_REFUSED, exc.code)
        return CliError(message, EXIT_UNAVAILABLE, exc.code)
    if isinstance(exc, CorruptDownload):
        return CliError(str(exc), EXIT_UNAVAILABLE, "checksum_mismatch")
    if isinstance(exc, httpx.TransportError):
        try:
            where = f"{exc.request.url.scheme}://{exc.request.url.netloc.decode()}"
        except RuntimeError:  # an error raised before any request was made
            where = "mediaflow"
        reason = str(exc) or type(exc).__name__
        return CliError(f"cannot reach {where}: {reason}", EXIT_UNAVAILABLE, "unreachable")
    if isinstance(exc, OSError):
        # A local file that cannot be written (-o in a missing or read-only directory, ...).
        where = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
        return CliError(where, EXIT_USAGE, "local_file")
    # Something no check here foresaw, such as an answer that is not what the contract says:
    # still one line, with the way to see more.
    return CliError(
        f"unexpected {type(exc).__name__}: {exc} (MEDIAFLOW_DEBUG=1 shows the traceback)",
        EXIT_UNAVAILABLE,
        "unexpected",
    )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = asyncio.run(args.handler(args))
    except KeyboardInterrupt:
        warn("interrupted", "stopped")
        code = EXIT_INTERRUPTED
    except Exception as exc:
        if os.environ.get("MEDIAFLOW_DEBUG"):
            raise
        failure = _failure(exc)
        warn("error", failure.message)
        if args.json:
            error = {
                "code": failure.code,
                "message": failure.message,
                "exit_code": failure.exit_code,
            }
            sys.stdout.write(json.dumps({"error": error}) + "\n")
        code = failure.exit_code
    sys.exit(code)
