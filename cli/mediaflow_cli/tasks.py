"""The user's task commands: submit and follow one, list them, see, cancel or delete one, and
download its file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mediaflow_cli.client import Api, api_for
from mediaflow_cli.command import (
    EXIT_OK,
    EXIT_TASK_FAILED,
    EXIT_USAGE,
    CliError,
    Commands,
    add_command,
    emit,
    say,
)
from mediaflow_cli.progress import Bar

QUALITIES = ("best", "2160", "1440", "1080", "720", "480", "360", "240", "144")
AUDIO_FORMATS = ("original", "mp3", "opus")
LIST_PAGE = 20


def _describe(task: dict[str, Any]) -> str:
    """One line for a person: what the task is and where it stands."""
    status = task["status"]
    if status == "succeeded" and task.get("result"):
        result = task["result"]
        kept = f", kept until {result['expires_at']}" if result.get("expires_at") else ""
        return (
            f"succeeded: {result['filename']} ({result['content_type']}, {result['size']} bytes"
            f"{kept})"
        )
    if task.get("error"):
        return f"{status}: {task['error']['code']}: {task['error']['message']}"
    progress = "" if task.get("progress") is None else f" {task['progress']}%"
    return f"{status}{progress}: {task['source_url']}"


def _ended_badly(task: dict[str, Any]) -> bool:
    return task["status"] in ("failed", "canceled")


async def _follow(api: Api, task: dict[str, Any]) -> dict[str, Any]:
    """Follows a task to its end with a progress bar; returns its final state."""
    with Bar("storing") as bar:
        async for state in api.follow(task["id"]):
            task = state
            bar.update(task["status"], task["bytes_done"], task["bytes_total"])
    return task


def _destination(output: str | None, task: dict[str, Any]) -> Path | None:
    """Where a file goes: -o FILE (overwritten), into -o DIR, '-' for stdout, or the task's
    filename in the current directory, never over an existing file."""
    if output == "-":
        return None
    # The server names the file; only its last segment is used, never a path it chose.
    name = Path(task["result"]["filename"] or "").name.lstrip(".") or task["id"]
    if output is not None and not Path(output).is_dir():
        return Path(output)
    folder = Path(output or ".")
    candidate = folder / name
    stem, suffix = candidate.stem, candidate.suffix
    number = 1
    while candidate.exists():
        candidate = folder / f"{stem} ({number}){suffix}"
        number += 1
    return candidate


async def _save(api: Api, task: dict[str, Any], output: str | None) -> Path | None:
    destination = _destination(output, task)
    with Bar("downloading") as bar:
        saved = await api.save(task, destination, lambda done, total: bar.update("", done, total))
    say(f"saved {saved.size} bytes to {destination or 'stdout'} (SHA-256 verified)")
    return destination


def _one_thing_on_stdout(args: argparse.Namespace) -> None:
    if args.json and args.output == "-":
        raise CliError("--json and -o - would both write to stdout", EXIT_USAGE, "usage")


async def submit(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"url": args.source_url}
    if args.quality:
        body["quality"] = args.quality if args.quality == "best" else int(args.quality)
    if args.audio:
        body["mode"] = "audio"
    elif args.mute:
        body["mode"] = "mute"
    if args.audio_format:
        if not args.audio:
            raise CliError("--audio-format goes with --audio", EXIT_USAGE, "usage")
        body["audio_format"] = args.audio_format
    _one_thing_on_stdout(args)
    async with api_for(args.url) as api:
        task = (await api.json("POST", "/v1/tasks", json=body))["task"]
        say(f"accepted task {task['id']}")
        if args.no_wait:
            emit(args, {"task": task}, task["id"])
            return EXIT_OK
        if not args.json and args.output != "-":
            emit(args, None, task["id"])
        task = await _follow(api, task)
        say(_describe(task), "green" if task["status"] == "succeeded" else "red")
        path = await _save(api, task, args.output) if task["status"] == "succeeded" else None
    if args.json:
        emit(args, {"task": task, "file": str(path) if path else None})
    elif path is not None:
        emit(args, None, str(path))
    return EXIT_TASK_FAILED if _ended_badly(task) else EXIT_OK


async def watch(args: argparse.Namespace) -> int:
    _one_thing_on_stdout(args)
    async with api_for(args.url) as api:
        task = await _follow(api, {"id": args.task_id})
        say(_describe(task), "green" if task["status"] == "succeeded" else "red")
        path = (
            await _save(api, task, args.output)
            if args.output is not None and task["status"] == "succeeded"
            else None
        )
    if args.json:
        emit(args, {"task": task, "file": str(path) if path else None})
    else:
        emit(args, None, task["status"], *([str(path)] if path else []))
    return EXIT_TASK_FAILED if _ended_badly(task) else EXIT_OK


async def status(args: argparse.Namespace) -> int:
    async with api_for(args.url) as api:
        task = await api.task(args.task_id)
    say(_describe(task))
    emit(args, {"task": task}, task["status"])
    return EXIT_TASK_FAILED if _ended_badly(task) else EXIT_OK


def _row(task: dict[str, Any]) -> str:
    """id first and the name last, so that `awk '{print $1}'` and `cut` both work."""
    result = task.get("result") or {}
    progress = "-" if task.get("progress") is None else f"{task['progress']}%"
    size = str(result.get("size", "-"))
    name = result.get("filename") or task["source_url"]
    created = task["created_at"]
    return f"{task['id']}  {task['status']:<9}  {progress:>4}  {size:>10}  {created}  {name}"


async def list_tasks(args: argparse.Namespace) -> int:
    items: list[dict[str, Any]] = []
    cursor = args.cursor
    async with api_for(args.url) as api:
        while True:
            params = {"limit": str(args.limit)} | ({"cursor": cursor} if cursor else {})
            page = await api.json("GET", "/v1/tasks", params=params)
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if not (args.all and cursor):
                break
    emit(args, {"items": items, "next_cursor": cursor}, *(_row(task) for task in items))
    if not items:
        say("no tasks yet: mediaflow submit URL")
    if cursor and not args.json:
        say(f"more: mediaflow list --cursor {cursor}  (or --all)")
    return EXIT_OK


async def cancel(args: argparse.Namespace) -> int:
    async with api_for(args.url) as api:
        task = (await api.json("POST", f"/v1/tasks/{args.task_id}/cancel"))["task"]
    say(_describe(task))
    emit(args, {"task": task}, task["status"])
    return EXIT_OK


async def delete(args: argparse.Namespace) -> int:
    async with api_for(args.url) as api:
        await api.call("DELETE", f"/v1/tasks/{args.task_id}")
    say(f"deleted task {args.task_id} and its file")
    emit(args, {"deleted": args.task_id})
    return EXIT_OK


async def download(args: argparse.Namespace) -> int:
    _one_thing_on_stdout(args)
    async with api_for(args.url) as api:
        task = await api.task(args.task_id)
        if task["status"] != "succeeded":
            # The server's own 409 task_not_ready, so the error reads the same either way; if
            # the task succeeded meanwhile, its result is read again.
            await api.download_url(task["id"])
            task = await api.task(args.task_id)
        if args.print_url:
            url = await api.download_url(task["id"])
            say("a presigned URL, valid for up to 15 minutes")
            emit(args, {"task": task, "url": url}, url)
            return EXIT_OK
        path = await _save(api, task, args.output)
    if args.json:
        emit(args, {"task": task, "file": str(path) if path else None})
    elif path is not None:
        emit(args, None, str(path))
    return EXIT_OK


def register(commands: Commands) -> None:

    submit_command = add_command(
        commands,
        "submit",
        "submit a media URL, follow it live and download the file (stdout: task id, then path)",
        submit,
    )
    submit_command.add_argument("source_url", metavar="URL")
    submit_command.add_argument(
        "--quality", choices=QUALITIES, help="best, or the largest height wanted (default best)"
    )
    mode = submit_command.add_mutually_exclusive_group()
    mode.add_argument("--audio", action="store_true", help="audio only")
    mode.add_argument("--mute", action="store_true", help="video only, without its audio")
    submit_command.add_argument(
        "--audio-format",
        choices=AUDIO_FORMATS,
        help="with --audio: keep or re-encode (default original)",
    )
    target = submit_command.add_mutually_exclusive_group()
    target.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="save to FILE (or into a directory; - for stdout); default: the task's file name "
        "in the current directory",
    )
    target.add_argument("--no-wait", action="store_true", help="print the task id and return")

    listing = add_command(
        commands, "list", "your tasks, newest first (one line each, id first)", list_tasks
    )
    listing.add_argument(
        "--limit", type=int, default=LIST_PAGE, help=f"tasks per page (1-100, default {LIST_PAGE})"
    )
    listing.add_argument("--cursor", help="continue after a previous page")
    listing.add_argument("--all", action="store_true", help="every page")

    for name, handler, what in (
        ("status", status, "a task's state (stdout: its status)"),
        ("watch", watch, "follow a task live to its end (stdout: its final status)"),
        ("cancel", cancel, "cancel a queued or running task (its credit is refunded)"),
        ("delete", delete, "delete a task and its stored file (a running task is canceled first)"),
        ("download", download, "download a succeeded task's file (stdout: its path)"),
    ):
        command = add_command(commands, name, what, handler)
        command.add_argument("task_id", metavar="ID")
        if name == "watch":
            command.add_argument(
                "-o",
                "--output",
                metavar="FILE",
                help="then download the file to FILE (or into a directory; - for stdout)",
            )
        if name == "download":
            command.add_argument(
                "-o",
                "--output",
                metavar="FILE",
                help="save to FILE (or into a directory; - for stdout); default: the task's file "
                "name in the current directory",
            )
        if name == "download":
            command.add_argument(
                "--print-url",
                action="store_true",
                help="print a presigned URL instead of downloading",
            )
