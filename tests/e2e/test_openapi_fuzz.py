"""schemathesis against the published OpenAPI document — every public route of the one
origin: auth's, the gateway's and the notifier's — through the ingress, as a signed-in user:
zero server errors and zero responses that disagree with the document (status, content
type, body, headers; 405 with `Allow` for methods a route does not have) over at least
1,500 generated requests."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from devstack import stack

MIN_REQUESTS = 1500
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)
PUBLIC_ROUTES = {
    "POST /v1/auth/sign-up",
    "POST /v1/auth/sign-in",
    "POST /v1/auth/sign-out",
    "GET /v1/auth/session",
    "DELETE /v1/auth/sessions",
    "POST /v1/auth/api-keys",
    "GET /v1/auth/api-keys",
    "DELETE /v1/auth/api-keys/{key_id}",
    "GET /v1/me",
    "POST /v1/tasks",
    "GET /v1/tasks",
    "GET /v1/tasks/{task_id}",
    "POST /v1/tasks/{task_id}/cancel",
    "DELETE /v1/tasks/{task_id}",
    "GET /v1/tasks/{task_id}/download",
    "GET /v1/events",
}
# Routes that end the session they are sent with: each gets a session of its own, so the
# one every other route is fuzzed with stays signed in.
SESSION_ENDING = ("AuthSignOut", "AuthRevokeAllSessions")
# Each costs a password hash when its body is valid: fewer examples keep the run short.
PASSWORD_HASHING = ("AuthSignUp", "AuthSignIn")
# One single-worker run per part, side by side: schemathesis's worker threads can trip a
# CPython 3.11 race in `ast.parse` (hypothesis describing a filter), separate processes not.
PARTS = {
    "auth": ["--include-path-regex", "^/v1/auth/"],
    "events": ["--include-path", "/v1/events"],
    "tasks": ["--include-path", "/v1/tasks"],
    "gateway": ["--exclude-path-regex", "^/v1/(auth/|events|tasks$)"],
}


def _signed_up(client: httpx.Client) -> str:
    response = client.post(
        "/v1/auth/sign-up",
        json={"email": f"fuzz-{secrets.token_hex(5)}@example.com", "password": "a long passphrase"},
    )
    assert response.status_code == 201, response.text
    return f"mf_session={response.cookies['mf_session']}"


def _toml(value: object) -> str:
    # JSON strings, numbers and booleans are valid TOML values.
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def _config(public_url: str, cookie: str, ending_cookies: dict[str, str]) -> str:
    """schemathesis.toml: what the command line cannot say per operation."""
    lines = [
        "request-timeout = 30",
        # A browser's same-origin header, so that unsafe requests reach the handlers instead
        # of stopping at the CSRF check.
        f"headers = {_toml({'Origin': public_url, 'Cookie': cookie})}",
        # Credentials are the session above (generated ones would turn most requests into
        # 401s before any handler runs).
        "generation.with-security-parameters = false",
        "generation.max-examples = 200",
        'generation.database = "none"',
        # Hypothesis's health checks generate extra inputs of their own before each run.
        'suppress-health-check = ["all"]',
    ]
    for operation_id, ending_cookie in ending_cookies.items():
        lines += [
            "[[operations]]",
            f"include-operation-id = {_toml(operation_id)}",
            f"headers = {_toml({'Cookie': ending_cookie})}",
        ]
    lines += [
        "[[operations]]",
        f"include-operation-id = {_toml(list(PASSWORD_HASHING))}",
        "generation.max-examples = 60",
        # An event stream never ends: read up to its first event (the snapshot of a task),
        # and only briefly when none comes (a filter naming no task of the user's).
        "[[operations]]",
        'include-operation-id = "EventsStream"',
        "max-stream-events = 1",
        "request-timeout = 2",
        "generation.max-examples = 40",
    ]
    return "\n".join(lines) + "\n"


# The stack's start-up counts too when this is the session's first test to use it.
@pytest.mark.timeout(360)
def test_generated_requests_get_documented_answers(
    running_stack: stack.StackConfig, artifacts_dir: Path, tmp_path: Path
) -> None:
    with httpx.Client(base_url=running_stack.public_url, timeout=30) as client:
        cookie = _signed_up(client)
        ending_cookies = {operation_id: _signed_up(client) for operation_id in SESSION_ENDING}
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(running_stack.public_url, cookie, ending_cookies))
    st = Path(sys.executable).parent / "st"
    runs = {
        part: subprocess.Popen(
            [
                str(st),
                "--config-file",
                str(config),
                "run",
                f"{running_stack.public_url}/v1/openapi.json",
                *selection,
                "--checks",
                ",".join(CHECKS),
                "--phases",
                "examples,coverage,fuzzing",
                "--workers",
                "1",
                "--no-color",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
        )
        for part, selection in PARTS.items()
    }
    reports = {}
    try:
        for part, run in runs.items():
            reports[part] = run.communicate(timeout=300)[0]
            (artifacts_dir / f"schemathesis-{part}.txt").write_text(reports[part])
    finally:
        for run in runs.values():
            if run.poll() is None:
                run.kill()
            run.communicate()
    generated = tested = 0
    for part, report in reports.items():
        assert runs[part].returncode == 0, report[-6000:]
        counts = re.search(r"(\d+) generated, (\d+) passed", report)
        operations = re.search(r"Tested: (\d+)", report)
        assert counts, report[-3000:]
        assert operations, report[-3000:]
        assert counts[1] == counts[2], report[-3000:]
        print(f"schemathesis {part}: {counts[1]} generated, {counts[2]} passed")
        generated += int(counts[1])
        tested += int(operations[1])
    assert generated >= MIN_REQUESTS
    with httpx.Client(base_url=running_stack.public_url, timeout=30) as client:
        document = client.get("/v1/openapi.json").json()
        described = {f"{m.upper()} {p}" for p, item in document["paths"].items() for m in item}
        assert described == PUBLIC_ROUTES
        assert tested == len(PUBLIC_ROUTES)
        # The session everything else was fuzzed with outlived the session-ending routes.
        me = client.get("/v1/me", headers={"Cookie": cookie})
        assert me.status_code == 200, me.text
