"""``mediaflow``: sign in, submit a media URL and watch it land, from a terminal."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from mediaflow_cli import diagnose
from mediaflow_cli.client import Api, ApiError, load_session

DEFAULT_URL = os.environ.get("MEDIAFLOW_URL", "http://127.0.0.1:8080")
EXIT_TASK_FAILED = 1
EXIT_USAGE = 2

console = Console(stderr=True)


def _password(args: argparse.Namespace) -> str:
    return os.environ.get("MEDIAFLOW_PASSWORD") or getpass.getpass("Password: ")


def _api(args: argparse.Namespace) -> Api:
    session = load_session() or {}
    base_url = args.url or session.get("url") or DEFAULT_URL
    return Api(base_url, session.get("token"))


async def _authenticate(args: argparse.Namespace, action: str) -> int:
    async with Api(args.url or DEFAULT_URL, None) as api:
        body = await api.authenticate(action, args.email, _password(args))
    console.print(f"signed in as {body['user']['email']}")
    return 0


async def _submit(args: argparse.Namespace) -> int:
    async with _api(args) as api:
        response = await api.call("POST", "/v1/tasks", json={"url": args.source_url})
        task: dict[str, Any] = response.json()["task"]
        print(task["id"])
        if args.no_wait:
            return 0
        with Progress(
            TextColumn("[bold]{task.fields[status]}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
        ) as progress:
            bar = progress.add_task("media", total=None, status=task["status"])
            task_id = task["id"]
            async for task in api.follow(task_id):
                progress.update(
                    bar,
                    completed=task["bytes_done"],
                    total=task["bytes_total"],
                    status=task["status"],
                )
        return _report(task, await _download_url(api, task))


async def _download_url(api: Api, task: dict[str, Any]) -> str | None:
    if task["status"] != "succeeded":
        return None
    response = await api.http.get(f"/v1/tasks/{task['id']}/download", follow_redirects=False)
    if response.status_code != 302:
        raise ApiError(response)
    return response.headers["location"]


def _report(task: dict[str, Any], download_url: str | None) -> int:
    if task["status"] == "succeeded":
        result = task["result"]
        console.print(
            f"[green]succeeded[/]: {result['size']} bytes, {result['content_type']}, "
            f"sha256 {result['sha256']}"
        )
        console.print(f"download (expires within 15 min): {download_url}")
        return 0
    error = task.get("error") or {"code": task["status"], "message": ""}
    console.print(f"[red]{task['status']}[/]: {error['code']}: {error['message']}")
    return EXIT_TASK_FAILED


async def _status(args: argparse.Namespace) -> int:
    async with _api(args) as api:
        task = (await api.call("GET", f"/v1/tasks/{args.task_id}")).json()["task"]
        console.print_json(data=task)
        return 0 if task["status"] != "failed" else EXIT_TASK_FAILED


async def _watch(args: argparse.Namespace) -> int:
    async with _api(args) as api:
        async for task in api.follow(args.task_id):
            progress = "-" if task["progress"] is None else task["progress"]
            console.print(f"{task['status']:>9} {progress:>3}%")
        return _report(task, await _download_url(api, task))


async def _diagnose(args: argparse.Namespace) -> int:
    services = dict(diagnose.DEFAULT_SERVICES)
    for item in args.service or []:
        name, _, url = item.partition("=")
        services[name] = url
    result = await diagnose.diagnose(args.url or DEFAULT_URL, services, args.database_url)
    return diagnose.report(result, args.json)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mediaflow", description=__doc__)
    parser.add_argument(
        "--url", help=f"the mediaflow origin (default {DEFAULT_URL} or the saved one)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("sign-up", "sign-in"):
        command = commands.add_parser(
            name, help=f"{name.replace('-', ' ')}; password from MEDIAFLOW_PASSWORD or a prompt"
        )
        command.add_argument("email")
    submit = commands.add_parser("submit", help="submit a media URL and follow it live")
    submit.add_argument("source_url")
    submit.add_argument("--no-wait", action="store_true", help="print the task id and return")
    for name in ("status", "watch"):
        command = commands.add_parser(name, help=f"{name} a task")
        command.add_argument("task_id")
    check = commands.add_parser(
        "diagnose", help="check configuration, sessions and cookies end to end"
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument(
        "--service",
        action="append",
        metavar="NAME=URL",
        help="a service's own URL (default: local ports)",
    )
    check.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/mediaflow"),
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["admin"]:  # operators' commands: their own module, against the database
        from mediaflow_cli import admin  # only operators pay for its imports

        sys.exit(admin.main(argv[1:]))
    args = _parser().parse_args(argv)
    handlers = {
        "sign-up": lambda: _authenticate(args, "sign-up"),
        "sign-in": lambda: _authenticate(args, "sign-in"),
        "submit": lambda: _submit(args),
        "status": lambda: _status(args),
        "watch": lambda: _watch(args),
        "diagnose": lambda: _diagnose(args),
    }
    try:
        code = asyncio.run(handlers[args.command]())
    except ApiError as exc:
        console.print(f"[red]error[/]: {exc}")
        code = EXIT_USAGE if exc.status < 500 else EXIT_TASK_FAILED
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
