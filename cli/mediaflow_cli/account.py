"""The user's account commands: sign up, sign in, sign out, and who is signed in."""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from mediaflow_cli.client import Api, api_for, forget_session, resolve
from mediaflow_cli.command import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CliError,
    Commands,
    add_command,
    emit,
    say,
)


def _password(args: argparse.Namespace, confirm: bool) -> str:
    """From MEDIAFLOW_PASSWORD, stdin (--password-stdin), or a prompt on a terminal."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise CliError("--password-stdin: stdin held no password", EXIT_USAGE, "no_password")
        return password
    if password := os.environ.get("MEDIAFLOW_PASSWORD", ""):
        return password
    if not sys.stdin.isatty():
        raise CliError(
            "no password: set MEDIAFLOW_PASSWORD, pipe it with --password-stdin, "
            "or run this in a terminal to be asked",
            EXIT_USAGE,
            "no_password",
        )
    try:
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Password again: ") != password:
            raise CliError("the two passwords differ", EXIT_USAGE, "password_mismatch")
    except EOFError as exc:
        raise CliError("no password given", EXIT_USAGE, "no_password") from exc
    return password


async def _authenticate(args: argparse.Namespace, action: str) -> int:
    password = _password(args, confirm=action == "sign-up")
    base_url, _ = resolve(args.url)
    async with Api(base_url) as api:
        body = await api.authenticate(action, args.email, password, getattr(args, "name", None))
    say(f"signed in to {base_url} as {body['user']['email']}")
    emit(args, body)
    return EXIT_OK


async def sign_up(args: argparse.Namespace) -> int:
    return await _authenticate(args, "sign-up")


async def sign_in(args: argparse.Namespace) -> int:
    return await _authenticate(args, "sign-in")


async def sign_out(args: argparse.Namespace) -> int:
    base_url, headers = resolve(args.url)
    if "cookie" in headers:
        async with Api(base_url, headers) as api:
            # Revoked on the server even when the local copy is then forgotten.
            response = await api.http.post("/v1/auth/sign-out")
            if response.status_code >= 500:
                raise CliError(
                    f"the server could not sign out ({response.status_code}); "
                    "the session is kept, try again",
                    EXIT_UNAVAILABLE,
                    "unavailable",
                )
    forgotten = forget_session() if "cookie" in headers else False
    say("signed out" if forgotten else "not signed in")
    emit(args, {"signed_out": forgotten})
    return EXIT_OK


async def me(args: argparse.Namespace) -> int:
    async with api_for(args.url) as api:
        body = await api.json("GET", "/v1/me")
    balance = body["credits"]["balance"]
    say(
        f"{body['user']['email']} at {api.base_url}: {balance} credits. A task is charged when "
        "it is accepted and refunded if it fails or is canceled."
    )
    emit(args, body, str(balance))
    return EXIT_OK


def register(commands: Commands) -> None:
    where_from = (
        "password from MEDIAFLOW_PASSWORD, stdin with --password-stdin, or a prompt on a terminal"
    )
    for name, handler, what in (
        ("sign-up", sign_up, "create an account and sign in"),
        ("sign-in", sign_in, "sign in; the session is saved for the next commands"),
    ):
        command = add_command(commands, name, what, handler, f"{what}; {where_from}")
        command.add_argument("email")
        command.add_argument(
            "--password-stdin", action="store_true", help="read the password from stdin"
        )
        if name == "sign-up":
            command.add_argument("--name", help="your name (optional)")
    add_command(commands, "sign-out", "end the saved session, here and on the server", sign_out)
    add_command(commands, "me", "who is signed in and the credit balance (stdout: the balance)", me)
