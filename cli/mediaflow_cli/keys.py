"""The user's API key commands: create, list and delete keys for scripts and other tools."""

from __future__ import annotations

import argparse

from mediaflow_cli.client import api_for
from mediaflow_cli.command import EXIT_OK, Commands, add_command, add_group, emit, say


async def keys_create(args: argparse.Namespace) -> int:
    async with api_for(args.url) as api:
        created = await api.json("POST", "/v1/auth/api-keys", json={"name": args.name})
    say(
        f"created API key {created['id']} ({created['name']}); it is shown once, store it now. "
        "Use it as MEDIAFLOW_API_KEY or as `Authorization: Bearer KEY`."
    )
    emit(args, created, created["key"])
    return EXIT_OK


async def keys_list(args: argparse.Namespace) -> int:
    async with api_for(args.url) as api:
        body = await api.json("GET", "/v1/auth/api-keys")
    rows = [
        f"{key['id']}  {key['created_at']}  {key['last_used_at'] or 'never-used'}  {key['name']}"
        for key in body["items"]
    ]
    emit(args, body, *rows)
    if not rows:
        say("no API keys: mediaflow keys create NAME")
    return EXIT_OK


async def keys_delete(args: argparse.Namespace) -> int:
    async with api_for(args.url) as api:
        await api.call("DELETE", f"/v1/auth/api-keys/{args.key_id}")
    say(f"deleted API key {args.key_id}; it is refused from now on")
    emit(args, {"deleted": args.key_id})
    return EXIT_OK


def register(commands: Commands) -> None:
    keys = add_group(add_command(commands, "keys", "API keys for scripts and other tools"), "keys")
    create = add_command(
        keys, "create", "create an API key (stdout: the key, shown once)", keys_create
    )
    create.add_argument("name")
    add_command(keys, "list", "your API keys (one line each, id first)", keys_list)
    remove = add_command(keys, "delete", "delete an API key; it is refused at once", keys_delete)
    remove.add_argument("key_id", metavar="ID")
