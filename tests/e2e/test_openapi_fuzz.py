"""schemathesis against the published OpenAPI schema, through the ingress, as a signed-in
user: zero server errors and zero responses that disagree with the schema (status, content
type, body, headers) over at least 500 generated requests."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path

import httpx

from devstack import stack

MIN_REQUESTS = 500
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)


def test_generated_requests_get_documented_answers(
    running_stack: stack.StackConfig, artifacts_dir: Path
) -> None:
    with httpx.Client(base_url=running_stack.public_url, timeout=30) as client:
        signed_up = client.post(
            "/v1/auth/sign-up",
            json={
                "email": f"fuzz-{secrets.token_hex(5)}@example.com",
                "password": "a long passphrase",
            },
        )
        assert signed_up.status_code == 201, signed_up.text
        cookie = f"mf_session={signed_up.cookies['mf_session']}"
    st = Path(sys.executable).parent / "st"
    result = subprocess.run(
        [
            str(st),
            "run",
            f"{running_stack.public_url}/v1/openapi.json",
            "--checks",
            ",".join(CHECKS),
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "120",
            "--request-timeout",
            "30",
            "--header",
            f"Cookie: {cookie}",
            # A browser's same-origin header, so that unsafe requests reach the handlers
            # instead of stopping at the CSRF check.
            "--header",
            f"Origin: {running_stack.public_url}",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    report = result.stdout + result.stderr
    (artifacts_dir / "schemathesis.txt").write_text(report)
    counts = re.search(r"(\d+) generated, (\d+) passed", report)
    assert result.returncode == 0, report[-6000:]
    assert counts, report[-3000:]
    generated, passed = int(counts[1]), int(counts[2])
    print(f"schemathesis: {generated} generated, {passed} passed")
    assert generated == passed
    assert generated >= MIN_REQUESTS, report[-3000:]
