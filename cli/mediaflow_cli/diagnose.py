"""mediaflow diagnose: find what makes sessions fail for the wrong reason.

Each check prints PASS or FAIL with the fix in one line; any failure makes the exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx

from mediaflow_cli.client import DEFAULT_URL
from mediaflow_cli.command import Commands, add_command
from mediaflow_libs.migrate import migration_files

DEFAULT_SERVICES = {
    "auth": "http://127.0.0.1:8101",
    "gateway": "http://127.0.0.1:8102",
    "notifier": "http://127.0.0.1:8103",
    "worker": "http://127.0.0.1:8104",
}
MAX_CLOCK_SKEW_SECONDS = 2.0
REVOCATION_DEADLINE_SECONDS = 1.0


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass
class Diagnosis:
    public_url: str
    services: dict[str, str]
    database_url: str
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, name: str, ok: bool, detail: str, fix: str = "") -> bool:
        self.checks.append(Check(name, ok, detail, "" if ok else fix))
        return ok


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


async def check_services(d: Diagnosis, http: httpx.AsyncClient) -> None:
    down = []
    for name, url in d.services.items():
        try:
            started = time.time()
            ready = await http.get(f"{url}/readyz")
            facts = (await http.get(f"{url}/diagnostics")).json()
            finished = time.time()
            facts["clock_offset"] = facts["time"] - (started + finished) / 2
            d.facts[name] = facts
            if ready.status_code != 200:
                down.append(f"{name} not ready ({ready.json().get('detail', ready.status_code)})")
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            down.append(f"{name} unreachable at {url} ({type(exc).__name__})")
    d.record(
        "services reachable and ready",
        not down,
        "; ".join(down) or f"{', '.join(d.services)} answer /readyz",
        "start the services (`make run`) and read their logs in .run/local/logs/",
    )


def check_public_url(d: Diagnosis) -> None:
    seen = {name: facts["public_url"] for name, facts in d.facts.items()}
    distinct = set(seen.values())
    if len(distinct) > 1:
        d.record(
            "PUBLIC_URL identical across services",
            False,
            ", ".join(f"{name}={url}" for name, url in seen.items()),
            "set the same PUBLIC_URL for every service",
        )
        return
    configured = next(iter(distinct), "")
    d.record(
        "PUBLIC_URL identical across services",
        bool(configured),
        f"every service uses {configured}" if configured else "no service reported PUBLIC_URL",
        "start the services first",
    )
    if configured:
        d.record(
            "PUBLIC_URL is the URL in use",
            _origin(configured) == _origin(d.public_url),
            f"services say {configured}, this check reaches {d.public_url}",
            f"set PUBLIC_URL={_origin(d.public_url)} or reach mediaflow at {configured}",
        )


def check_service_secret(d: Diagnosis) -> None:
    prints = {name: facts["service_secret_fingerprint"] for name, facts in d.facts.items()}
    same = len(set(prints.values())) == 1
    groups: dict[str, list[str]] = {}
    for name, value in prints.items():
        groups.setdefault(value, []).append(name)
    d.record(
        "service credential identical across services",
        same and bool(prints),
        "one fingerprint for all"
        if same
        else "differs: " + " vs ".join("+".join(g) for g in groups.values()),
        "give every service the same SERVICE_SECRET "
        "(the fingerprint is compared, never the secret)",
    )


async def check_database(d: Diagnosis) -> float | None:
    try:
        con = await asyncpg.connect(d.database_url, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        d.record(
            "database reachable",
            False,
            f"{type(exc).__name__}: {exc}",
            "check DATABASE_URL and that PostgreSQL runs",
        )
        return None
    try:
        started = time.time()
        db_time = float(await con.fetchval("SELECT extract(epoch FROM now())"))
        offset = db_time - (started + time.time()) / 2
        applied = {
            r["version"] for r in await con.fetch("SELECT version FROM public.schema_migrations")
        }
    except asyncpg.PostgresError as exc:
        d.record("database reachable", False, str(exc), "run `mediaflow-migrate`")
        return None
    finally:
        await con.close()
    d.record("database reachable", True, "connected")
    pending = [name for version, name, _ in migration_files() if version not in applied]
    d.record(
        "migrations current",
        not pending,
        f"pending: {', '.join(pending)}" if pending else f"{len(applied)} applied",
        "run `mediaflow-migrate` (make run does)",
    )
    return offset


def check_clocks(d: Diagnosis, database_offset: float | None) -> None:
    offsets = {name: facts["clock_offset"] for name, facts in d.facts.items()}
    if database_offset is not None:
        offsets["database"] = database_offset
    if not offsets:
        return
    spread = max(offsets.values()) - min(offsets.values())
    d.record(
        "clock skew under 2 s",
        spread < MAX_CLOCK_SKEW_SECONDS,
        f"largest difference {spread:.3f}s",
        "synchronise clocks (NTP) on every host",
    )


def check_cookie(d: Diagnosis, set_cookie: str) -> str | None:
    """Checks the session cookie's attributes; returns the token when the browser would keep it."""
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(set_cookie)
    https = urlsplit(d.public_url).scheme == "https"
    expected_name = "__Host-mf_session" if https else "mf_session"
    morsel = (
        cookie.get(expected_name) or cookie.get("mf_session") or cookie.get("__Host-mf_session")
    )
    problems = []
    if morsel is None:
        problems.append(f"no {expected_name} cookie (got {', '.join(cookie) or 'none'})")
    else:
        if morsel.key != expected_name:
            problems.append(f"named {morsel.key}, but this URL needs {expected_name}")
        if not morsel["httponly"]:
            problems.append("not HttpOnly")
        if morsel["samesite"].lower() != "lax":
            problems.append(f"SameSite={morsel['samesite'] or 'unset'}")
        if morsel["path"] != "/":
            problems.append(f"Path={morsel['path'] or 'unset'}")
        if morsel["domain"]:
            problems.append(f"Domain={morsel['domain']} (must be host-only)")
        if bool(morsel["secure"]) != https:
            problems.append(
                "Secure over http: a browser would never send it back"
                if morsel["secure"]
                else "not Secure on an https URL"
            )
    d.record(
        "session cookie reaches the browser",
        not problems,
        "; ".join(problems)
        or f"{expected_name}; HttpOnly; SameSite=Lax; Path=/" + ("; Secure" if https else ""),
        "derive cookies from PUBLIC_URL only and reach mediaflow at exactly PUBLIC_URL",
    )
    return morsel.value if morsel is not None and not problems else None


async def _notifier_status(
    http: httpx.AsyncClient, base: str, headers: dict[str, str]
) -> tuple[int, str]:
    async with http.stream("GET", f"{base}/v1/events", headers=headers) as response:
        if response.status_code == 200:
            return 200, ""
        body = json.loads(await response.aread() or b"{}")
        return response.status_code, str(body.get("code", ""))


async def check_session_round_trip(d: Diagnosis, http: httpx.AsyncClient) -> None:
    base = d.public_url.rstrip("/")
    email = f"diagnose-{secrets.token_hex(6)}@diagnose.invalid"
    try:
        signed_up = await http.post(
            f"{base}/v1/auth/sign-up", json={"email": email, "password": secrets.token_urlsafe(18)}
        )
    except httpx.HTTPError as exc:
        d.record(
            "sign-up through the ingress",
            False,
            repr(exc),
            "check that nginx/ingress runs at PUBLIC_URL",
        )
        return
    if not d.record(
        "sign-up through the ingress",
        signed_up.status_code == 201,
        f"HTTP {signed_up.status_code}",
        "read auth's log for the request id " + signed_up.headers.get("x-request-id", "?"),
    ):
        return
    token = check_cookie(d, signed_up.headers.get("set-cookie", ""))
    if token is None:
        return
    name = "__Host-mf_session" if base.startswith("https://") else "mf_session"
    headers = {"cookie": f"{name}={token}", "origin": _origin(d.public_url)}
    me = await http.get(f"{base}/v1/me", headers=headers)
    events_status, _ = await _notifier_status(http, base, headers)
    d.record(
        "same cookie accepted by gateway and notifier",
        me.status_code == 200 and events_status == 200,
        f"gateway {me.status_code}, notifier {events_status}",
        "a 401 here means auth and the caller disagree: "
        "compare SERVICE_SECRET and AUTH_INTERNAL_URL",
    )
    await http.post(f"{base}/v1/auth/sign-out", headers=headers)
    started = time.monotonic()
    while True:
        gateway = await http.get(f"{base}/v1/me", headers=headers)
        notifier = await _notifier_status(http, base, headers)
        codes = (gateway.json().get("code") if gateway.status_code == 401 else None, notifier[1])
        elapsed = time.monotonic() - started
        if codes == ("session_revoked", "session_revoked") or elapsed > REVOCATION_DEADLINE_SECONDS:
            break
        await asyncio.sleep(0.05)
    d.record(
        "signed-out session refused within 1 s",
        codes == ("session_revoked", "session_revoked") and elapsed <= REVOCATION_DEADLINE_SECONDS,
        f"gateway {codes[0]}, notifier {codes[1] or 'accepted'} after {elapsed:.2f}s",
        "check that gateway and notifier receive revocations from RabbitMQ (same AMQP_NAMESPACE)",
    )


def check_media_tools(d: Diagnosis) -> None:
    """The worker's ffmpeg and yt-dlp: without ffmpeg no HLS or DASH link can be stored."""
    tools = d.facts.get("worker", {}).get("media_tools")
    if tools is None:
        return  # no worker among the services asked, or one from before media tools
    d.record(
        "worker has ffmpeg and yt-dlp",
        bool(tools.get("ffmpeg") and tools.get("ffprobe") and tools.get("yt_dlp")),
        f"ffmpeg {tools.get('ffmpeg') or 'missing'}, ffprobe {tools.get('ffprobe') or 'missing'}, "
        f"yt-dlp {tools.get('yt_dlp') or 'missing'}",
        "install ffmpeg on the worker's machine (`make deps`; the image carries it)",
    )


async def diagnose(public_url: str, services: dict[str, str], database_url: str) -> Diagnosis:
    d = Diagnosis(public_url=public_url, services=services, database_url=database_url)
    async with httpx.AsyncClient(timeout=5) as http:
        await check_services(d, http)
        check_public_url(d)
        check_service_secret(d)
        check_clocks(d, await check_database(d))
        check_media_tools(d)
        await check_session_round_trip(d, http)
    return d


def report(d: Diagnosis, as_json: bool) -> int:
    failed = [c for c in d.checks if not c.ok]
    if as_json:
        sys.stdout.write(
            json.dumps({"ok": not failed, "checks": [asdict(c) for c in d.checks]}, indent=2) + "\n"
        )
    else:
        for c in d.checks:
            line = f"{'PASS' if c.ok else 'FAIL'}  {c.name}: {c.detail}"
            sys.stdout.write(line + (f"\n      fix: {c.fix}" if c.fix else "") + "\n")
        sys.stdout.write(f"{len(d.checks) - len(failed)} passed, {len(failed)} failed\n")
    return 1 if failed else 0


async def run(args: argparse.Namespace) -> int:
    services = dict(DEFAULT_SERVICES)
    for item in args.service or []:
        name, _, url = item.partition("=")
        services[name] = url
    public_url = args.url or os.environ.get("MEDIAFLOW_URL") or DEFAULT_URL
    return report(await diagnose(public_url, services, args.database_url), args.json)


def register(commands: Commands) -> None:
    command = add_command(
        commands,
        "diagnose",
        "check configuration, sessions and cookies end to end (for operators; exit 1 on a FAIL)",
        run,
    )
    command.add_argument(
        "--service",
        action="append",
        metavar="NAME=URL",
        help="a service's own URL (default: local ports)",
    )
    command.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/mediaflow"),
    )
