"""What every ``mediaflow`` subcommand shares: registration, exit codes, and where output goes.

Output: what a script uses (ids, URLs, paths, JSON) goes to stdout, one item a line and never
wrapped; what a person reads (progress, explanations, errors) goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from rich.console import Console
from rich.text import Text

EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_REFUSED = 4
EXIT_UNAVAILABLE = 5
EXIT_INTERRUPTED = 130

EXIT_CODES = (
    (EXIT_OK, "success"),
    (EXIT_TASK_FAILED, "the task ended failed or canceled (submit, watch, status)"),
    (EXIT_USAGE, "bad arguments or missing input (no password and no terminal, -o unwritable)"),
    (EXIT_AUTH, "not signed in, or the session or API key was refused"),
    (EXIT_REFUSED, "the server refused the request (not found, no credits, invalid URL, ...)"),
    (EXIT_UNAVAILABLE, "mediaflow unreachable or failing, or a download that does not verify"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)

Handler = Callable[[argparse.Namespace], Awaitable[int]]
# What `add_subparsers` returns, named in a string: argparse's class takes no subscript at run time.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

console = Console(stderr=True, highlight=False)


class CliError(Exception):
    """A failure the user can act on: printed as one line, never as a traceback."""

    def __init__(self, message: str, exit_code: int, code: str = "error") -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.code = code


def exit_codes_text() -> str:
    return "exit codes:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES)


def _global_options(defaults: bool) -> argparse.ArgumentParser:
    """--json and --url, accepted before the subcommand and after it. After it they are
    SUPPRESSed when absent, so that they do not overwrite the value given before it."""
    options = argparse.ArgumentParser(add_help=False)
    default: Any = None if defaults else argparse.SUPPRESS
    options.add_argument(
        "--json",
        action="store_true",
        default=False if defaults else argparse.SUPPRESS,
        help="print the result as one JSON document on stdout",
    )
    options.add_argument(
        "--url",
        default=default,
        help="the mediaflow origin (default: MEDIAFLOW_URL, the signed-in one, "
        "or http://127.0.0.1:8080)",
    )
    return options


def root_parser(description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="mediaflow",
        description=description,
        epilog=exit_codes_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_global_options(defaults=True)],
    )


def add_command(
    commands: Commands,
    name: str,
    help: str,
    handler: Handler | None = None,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand taking the global options. Without a handler it is a group: give it its
    own subcommands with ``add_group``."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help,
        description=description or help,
        epilog="exit codes: see mediaflow --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_global_options(defaults=False)],
    )
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def add_group(parser: argparse.ArgumentParser, title: str) -> Commands:
    group = parser.add_subparsers(title=title, metavar="COMMAND", required=True)
    return group


def emit(args: argparse.Namespace, data: object, *lines: str) -> None:
    """The command's result: ``data`` as JSON with --json, else ``lines`` as they are."""
    if args.json:
        sys.stdout.write(json.dumps(data) + "\n")
    else:
        for line in lines:
            sys.stdout.write(line + "\n")
    sys.stdout.flush()


def say(message: str, style: str = "") -> None:
    """A line for the person at the terminal (stderr); the message is never read as markup."""
    console.print(Text(message, style=style), soft_wrap=True)


def warn(label: str, message: str, style: str = "bold red") -> None:
    console.print(Text.assemble((f"{label}: ", style), message), soft_wrap=True)
