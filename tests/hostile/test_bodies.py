"""Hostile request bodies and headers: each gets its documented problem and changes nothing."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from devstack import media
from tests.hostile.support import (
    PASSWORD,
    User,
    World,
    assert_problem,
    assert_raw_problem,
    send_raw,
    sign_up,
)

GOOD_URL = "https://media.example.com/video.mp4"

MALFORMED = {
    "empty": b"",
    "whitespace": b"   \r\n\t ",
    "open-brace": b"{",
    "missing-value": b'{"url": }',
    "single-quotes": b"{'url': 'https://media.example.com/v.mp4'}",
    "unterminated": b'{"url": "https://media.example.com/v.mp4"',
    "trailing-garbage": b'{"url": "https://media.example.com/v.mp4"} trailing',
    "trailing-comma": b'{"url": "https://media.example.com/v.mp4",}',
    "comment": b'{"url": "https://media.example.com/v.mp4" /* hi */}',
    "bare-word": b"url=https://media.example.com/v.mp4",
    "nul-bytes": b"\x00\x00\x00\x00",
    # Python's own parser takes these; JSON does not.
    "nan": b'{"url": NaN}',
    "infinity": b'{"url": -Infinity}',
    # Not an object.
    "null": b"null",
    "array": b'[{"url": "https://media.example.com/v.mp4"}]',
    "string": b'"https://media.example.com/v.mp4"',
    "number": b"42",
    "true": b"true",
    # Not UTF-8.
    "latin-1": '{"url": "https://media.example.com/vidéo.mp4"}'.encode("latin-1"),
    "invalid-byte": b'{"url": "https://media.example.com/\xff.mp4"}',
    "overlong-slash": b'{"url": "https://media.example.com/\xc0\xaf.mp4"}',
    "utf8-surrogate": b'{"url": "https://media.example.com/\xed\xa0\x80.mp4"}',
    "truncated-sequence": b'{"url": "https://media.example.com/\xe2\x82"}',
    "utf-16": '{"url": "https://media.example.com/v.mp4"}'.encode("utf-16"),
    "utf-32": '{"url": "https://media.example.com/v.mp4"}'.encode("utf-32"),
    # Parsers' limits: must be refused as bad JSON, not crash the handler.
    # Nesting deeper than the parser's recursion limit, in bodies under 8 KiB (nginx's body
    # buffer; larger bodies are the subject of test_an_oversized_body_is_payload_too_large).
    "deep-array": b"[" * 3_000 + b"]" * 3_000,
    "deep-object": b'{"a":' * 1_200 + b"1" + b"}" * 1_200,
    "huge-integer": b'{"url": ' + b"9" * 5_000 + b"}",
}

# Well-formed JSON objects whose `url` is not a URL mediaflow fetches.
BAD_URLS = {
    "missing": {},
    "null": {"url": None},
    "number": {"url": 12345},
    "number-overflow": b'{"url": 1e999}',  # valid JSON, whose number no float holds
    "list": {"url": [GOOD_URL]},
    "object": {"url": {"href": GOOD_URL}},
    "empty": {"url": ""},
    "spaces": {"url": "   "},
    "javascript": {"url": "javascript:alert(document.cookie)"},
    "data": {"url": "data:video/mp4;base64,AAAAGGZ0eXBpc29t"},
    "file": {"url": "file:///etc/passwd"},
    "gopher": {"url": "gopher://media.example.com:70/_GET"},
    "ftp": {"url": "ftp://media.example.com/v.mp4"},
    "dict": {"url": "dict://media.example.com:11211/stat"},
    "no-scheme": {"url": "//media.example.com/v.mp4"},
    "no-host": {"url": "http:///v.mp4"},
    "scheme-only": {"url": "https://"},
    "userinfo": {"url": "https://user:pass@media.example.com/v.mp4"},
    "userinfo-smuggle": {"url": "https://media.example.com@10.0.0.1/v.mp4"},
    "bad-port": {"url": "https://media.example.com:99999/v.mp4"},
    "port-text": {"url": "https://media.example.com:http/v.mp4"},
    "control-char": {"url": "https://media.example.com/v\x00.mp4"},
    "newline-header-injection": {"url": "https://media.example.com/v.mp4\r\nX-Injected: 1"},
    "tab": {"url": "https://media.example.com/\tv.mp4"},
    "inner-space": {"url": "https://media.example.com/my video.mp4"},
    "too-long": {"url": "https://media.example.com/" + "a" * 2100},
    "bad-idna": {"url": "https://xn--a.example.com\u0080/v.mp4"},
    "empty-label": {"url": "https://media..example.com/v.mp4"},
}

# A JSON string may escape a lone surrogate; it is no character, so no URL can hold it.
SURROGATES = {
    "surrogate-in-path": b'{"url": "https://media.example.com/\\ud800.mp4"}',
    "surrogate-host": b'{"url": "https://\\udfff/v.mp4"}',
    "surrogate-pair-reversed": b'{"url": "https://media.example.com/\\udc00\\ud800"}',
}


@pytest.fixture(scope="module")
async def body_user(world: World) -> User:
    return await sign_up(world.url, "bodies")


async def _refused(
    world: World, user: User, request: httpx.Request, status: int, code: str | set[str]
) -> None:
    before = await world.snapshot(user)
    async with world.client() as client:
        response = await client.send(request)
    assert_problem(response, status, code)
    assert await world.snapshot(user) == before


def _post(
    world: World, user: User, body: bytes, content_type: str = "application/json"
) -> httpx.Request:
    return httpx.Request(
        "POST",
        f"{world.url}/v1/tasks",
        content=body,
        headers={**user.cookie, "Content-Type": content_type},
    )


@pytest.mark.parametrize("name", list(MALFORMED))
async def test_a_body_that_is_not_a_json_object_is_invalid_json(
    world: World, body_user: User, name: str
) -> None:
    await _refused(world, body_user, _post(world, body_user, MALFORMED[name]), 400, "invalid_json")


@pytest.mark.parametrize("name", list(BAD_URLS))
async def test_a_url_that_cannot_be_fetched_is_invalid_url(
    world: World, body_user: User, name: str
) -> None:
    value = BAD_URLS[name]
    body = value if isinstance(value, bytes) else json.dumps(value).encode()
    await _refused(world, body_user, _post(world, body_user, body), 422, "invalid_url")


@pytest.mark.parametrize("name", list(SURROGATES))
async def test_a_lone_surrogate_is_refused_not_a_crash(
    world: World, body_user: User, name: str
) -> None:
    # The text is not valid Unicode (400 invalid_json) or the URL is no URL (422 invalid_url):
    # either is a fair answer; a 500 is not.
    before = await world.snapshot(body_user)
    async with world.client() as client:
        response = await client.send(_post(world, body_user, SURROGATES[name]))
    expected = {400: "invalid_json", 422: "invalid_url"}
    assert response.status_code in expected, f"{response.status_code} {response.text[:300]}"
    assert_problem(response, response.status_code, expected[response.status_code])
    assert await world.snapshot(body_user) == before


def _form(fields: dict[str, str]) -> bytes:
    return "&".join(f"{k}={v}" for k, v in fields.items()).encode()


def _multipart(fields: dict[str, str]) -> bytes:
    parts = [
        f'--XyZ\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in fields.items()
    ]
    return ("".join(parts) + "--XyZ--\r\n").encode()


def _xml(fields: dict[str, str]) -> bytes:
    return ("<r>" + "".join(f"<{k}>{v}</{k}>" for k, v in fields.items()) + "</r>").encode()


def _json(fields: dict[str, str], encoding: str = "utf-8") -> bytes:
    return json.dumps(fields).encode(encoding)


# (Content-Type or None for none at all, how the fields are written in it)
OTHER_TYPES = {
    "form": ("application/x-www-form-urlencoded", _form),
    "multipart": ("multipart/form-data; boundary=XyZ", _multipart),
    "xml": ("text/xml", _xml),
    "text": ("text/plain", _json),  # what a page of another site posts without a preflight
    "octets": ("application/octet-stream", _json),
    "utf16-declared": ("application/json; charset=utf-16", lambda f: _json(f, "utf-16")),
    "none": (None, _json),
}
JSON_ROUTES = ["submit", "sign-up", "sign-in", "create-api-key"]


async def _user_rows(world: World, email: str) -> int:
    async with world.pool.acquire() as con:
        count = await con.fetchval(
            "SELECT count(*) FROM auth.users WHERE lower(email) = lower($1)", email
        )
    return int(count)


@pytest.mark.parametrize("route", JSON_ROUTES)
@pytest.mark.parametrize("kind", list(OTHER_TYPES))
async def test_a_json_route_refuses_another_media_type_and_changes_nothing(
    world: World, body_user: User, kind: str, route: str
) -> None:
    content_type, encode = OTHER_TYPES[kind]
    fresh = f"bodies-{secrets.token_hex(6)}@example.com"
    path, fields, credentials = {
        "submit": ("/v1/tasks", {"url": GOOD_URL}, body_user.cookie),
        "sign-up": ("/v1/auth/sign-up", {"email": fresh, "password": PASSWORD}, {}),
        "sign-in": (
            "/v1/auth/sign-in",
            {"email": body_user.email, "password": PASSWORD},
            {},
        ),
        "create-api-key": ("/v1/auth/api-keys", {"name": "typed"}, body_user.cookie),
    }[route]
    headers = {**credentials, **({"Content-Type": content_type} if content_type else {})}
    request = httpx.Request("POST", f"{world.url}{path}", content=encode(fields), headers=headers)
    await _refused(world, body_user, request, 415, "unsupported_media_type")
    assert await _user_rows(world, fresh) == 0


def _padded(size: int) -> bytes:
    """A valid submission padded with an extra field to ``size`` bytes."""
    head = b'{"url": "https://media.example.com/v.mp4", "pad": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


async def _chunks(data: bytes, size: int = 16 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


@pytest.mark.parametrize("size", [9 * 1024, 60 * 1024], ids=["9KiB", "60KiB"])
async def test_a_padded_body_under_the_limit_is_accepted(
    world: World, body_user: User, origin: tuple[str, Path], size: int
) -> None:
    """The control for the size cases: the limit is 64 KiB, and bodies under it are served."""
    base_url, directory = origin
    media.write_sample_mp4(directory / "padded.mp4", 4096)
    head = f'{{"url": "{base_url}/padded.mp4", "pad": "'.encode()
    body = head + b"x" * (size - len(head) - 2) + b'"}'
    async with world.client() as client:
        response = await client.send(_post(world, body_user, body))
    assert response.status_code == 202, f"{response.status_code} {response.text[:300]}"
    task = await world.wait_terminal(body_user, response.json()["task"]["id"])
    assert task["status"] == "succeeded", task


@pytest.mark.parametrize(
    "size",
    [65 * 1024, 900 * 1024, 2 * 1024 * 1024, 8 * 1024 * 1024],
    ids=["65KiB", "900KiB", "2MiB", "8MiB"],
)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_an_oversized_body_is_payload_too_large(
    world: World, body_user: User, size: int, framing: str
) -> None:
    body = _padded(size)
    content: bytes | AsyncIterator[bytes] = body if framing == "content-length" else _chunks(body)
    request = httpx.Request(
        "POST",
        f"{world.url}/v1/tasks",
        content=content,
        headers={**body_user.cookie, "Content-Type": "application/json"},
    )
    if framing == "chunked":
        assert "content-length" not in request.headers
        assert request.headers["transfer-encoding"] == "chunked"
    await _refused(world, body_user, request, 413, "payload_too_large")


AUTH_BODIES = {
    # (path, body with EMAIL standing for a unique address, status, code)
    "sign-up-trailing-garbage": (
        "/v1/auth/sign-up",
        b'{"email": "EMAIL", "password": "a long passphrase"} x',
        400,
        "invalid_json",
    ),
    "sign-up-invalid-utf8": (
        "/v1/auth/sign-up",
        b'{"email": "EMAIL", "password": "a long pass\xff"}',
        400,
        "invalid_json",
    ),
    "sign-up-array": (
        "/v1/auth/sign-up",
        b'[{"email": "EMAIL", "password": "a long passphrase"}]',
        400,
        "invalid_json",
    ),
    "sign-up-deep": ("/v1/auth/sign-up", MALFORMED["deep-array"], 400, "invalid_json"),
    "sign-up-huge-integer": (
        "/v1/auth/sign-up",
        b'{"email": "EMAIL", "password": ' + b"9" * 5000 + b"}",
        400,
        "invalid_json",
    ),
    "sign-up-oversized": (
        "/v1/auth/sign-up",
        b'{"email": "EMAIL", "password": "a long passphrase", "x": "' + b"x" * 200_000 + b'"}',
        413,
        "payload_too_large",
    ),
    "sign-up-nul-email": (
        "/v1/auth/sign-up",
        b'{"email": "nul\\u0000EMAIL", "password": "a long passphrase"}',
        422,
        "invalid_email",
    ),
    "sign-up-surrogate-email": (
        "/v1/auth/sign-up",
        b'{"email": "s\\ud800EMAIL", "password": "a long passphrase"}',
        422,
        "invalid_email",
    ),
    "sign-up-nul-name": (
        "/v1/auth/sign-up",
        b'{"email": "EMAIL", "password": "a long passphrase", "name": "a\\u0000b"}',
        422,
        "invalid_name",
    ),
    "sign-up-email-list": (
        "/v1/auth/sign-up",
        b'{"email": ["EMAIL"], "password": "a long passphrase"}',
        422,
        "invalid_email",
    ),
    "sign-up-password-number": (
        "/v1/auth/sign-up",
        b'{"email": "EMAIL", "password": 123456789012}',
        422,
        "weak_password",
    ),
    "sign-in-single-quotes": (
        "/v1/auth/sign-in",
        b"{'email': 'EMAIL', 'password': 'a long passphrase'}",
        400,
        "invalid_json",
    ),
    "sign-in-deep": ("/v1/auth/sign-in", MALFORMED["deep-object"], 400, "invalid_json"),
    "sign-in-nul-email": (
        "/v1/auth/sign-in",
        b'{"email": "nul\\u0000EMAIL", "password": "a long passphrase"}',
        401,
        "invalid_credentials",
    ),
    "sign-in-surrogate-email": (
        "/v1/auth/sign-in",
        b'{"email": "s\\ud800EMAIL", "password": "a long passphrase"}',
        401,
        "invalid_credentials",
    ),
    "sign-in-operator-injection": (
        "/v1/auth/sign-in",
        b'{"email": {"$ne": null}, "password": {"$ne": null}}',
        401,
        "invalid_credentials",
    ),
    "api-key-null": ("/v1/auth/api-keys", b"null", 400, "invalid_json"),
    "api-key-deep": ("/v1/auth/api-keys", MALFORMED["deep-array"], 400, "invalid_json"),
    "api-key-nul-name": ("/v1/auth/api-keys", b'{"name": "a\\u0000b"}', 422, "invalid_name"),
    "api-key-surrogate-name": ("/v1/auth/api-keys", b'{"name": "\\ud800"}', 422, "invalid_name"),
    "api-key-list-name": ("/v1/auth/api-keys", b'{"name": ["key"]}', 422, "invalid_name"),
}


@pytest.mark.parametrize("name", list(AUTH_BODIES))
async def test_auth_bodies(world: World, body_user: User, name: str) -> None:
    path, template, status, code = AUTH_BODIES[name]
    marker = f"hostile-{secrets.token_hex(6)}"
    body = template.replace(b"EMAIL", f"{marker}@example.com".encode())
    headers = {"Content-Type": "application/json"}
    if path == "/v1/auth/api-keys":
        headers |= body_user.cookie
    request = httpx.Request("POST", f"{world.url}{path}", content=body, headers=headers)
    await _refused(world, body_user, request, status, code)
    created = await world.pool.fetchval(
        "SELECT count(*) FROM auth.users WHERE strpos(email, $1) > 0", marker
    )
    assert created == 0, f"{name}: an account was created"


# --- headers ----------------------------------------------------------------------------


HUGE_HEADERS = {
    # One header line longer than the ingress's header buffers.
    "one-16KiB-header": [("X-Padding", "a" * 16 * 1024)],
    "16KiB-cookie": [("Cookie", "mf_session=" + "b" * 16 * 1024)],
    "64KiB-header": [("X-Padding", "c" * 64 * 1024)],
    # Many headers that together exceed any reasonable total.
    "200-headers-of-1KiB": [(f"X-Pad-{i}", "d" * 1024) for i in range(200)],
}


@pytest.mark.parametrize("name", list(HUGE_HEADERS))
async def test_huge_headers_get_a_problem_not_an_html_page(
    world: World, body_user: User, name: str
) -> None:
    before = await world.snapshot(body_user)
    lines = "".join(f"{k}: {v}\r\n" for k, v in HUGE_HEADERS[name])
    body = json.dumps({"url": GOOD_URL}).encode()
    request = (
        f"POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1:{world.config.ingress_port}\r\n"
        f"Authorization: Bearer {body_user.api_key}\r\n{lines}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    status, headers, answer = await send_raw(world.config.ingress_port, request)
    assert_raw_problem(status, headers, answer, {400, 431})
    assert await world.snapshot(body_user) == before


async def test_a_huge_request_line_gets_a_problem_not_an_html_page(world: World) -> None:
    path = "/v1/tasks/" + "e" * 20 * 1024
    status, headers, body = await send_raw(
        world.config.ingress_port,
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode(),
    )
    assert_raw_problem(status, headers, body, {400, 404, 414})


@pytest.mark.parametrize(
    "head",
    [
        "Content-Length: abc",
        "Content-Length: -1",
        "Content-Length: 10\r\nContent-Length: 12",
        "Content-Length: 5\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: gzip",
    ],
    ids=["cl-text", "cl-negative", "cl-twice", "cl-and-te", "te-unknown"],
)
async def test_broken_framing_gets_a_problem_not_an_html_page(
    world: World, body_user: User, head: str
) -> None:
    before = await world.snapshot(body_user)
    status, headers, body = await send_raw(
        world.config.ingress_port,
        (
            "POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {body_user.api_key}\r\n"
            f"Content-Type: application/json\r\n{head}\r\nConnection: close\r\n\r\n"
            '0\r\n\r\n{"url": "https://media.example.com/v.mp4"}'
        ).encode(),
    )
    assert_raw_problem(status, headers, body, {400, 411, 501})
    assert await world.snapshot(body_user) == before


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Idempotency-Key", "ключ"),
        ("Idempotency-Key", "has space"),
        ("Idempotency-Key", "k" * 256),
        ("Idempotency-Key", ""),
    ],
    ids=["non-ascii", "space", "too-long", "empty"],
)
async def test_a_bad_idempotency_key_is_refused(
    world: World, body_user: User, name: str, value: str
) -> None:
    before = await world.snapshot(body_user)
    async with world.client() as client:
        response = await client.post(
            "/v1/tasks",
            json={"url": GOOD_URL},
            headers={**body_user.bearer, name: value.encode("utf-8")},  # type: ignore[dict-item]
        )
    assert_problem(response, 422, "invalid_idempotency_key")
    assert await world.snapshot(body_user) == before


@pytest.mark.parametrize(
    "request_id",
    ["<script>alert(1)</script>", "a" * 500, "../../etc/passwd", "id\u00e9"],
    ids=["html", "long", "path", "latin1"],
)
async def test_a_hostile_request_id_is_not_echoed(world: World, request_id: str) -> None:
    async with world.client() as client:
        response = await client.get("/v1/me", headers={"X-Request-ID": request_id.encode("utf-8")})  # type: ignore[dict-item]
    body = assert_problem(response, 401, "session_missing")
    assert body["request_id"] != request_id
    assert request_id not in response.text
    assert response.headers.get("x-request-id") != request_id


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/tasks"),
        ("DELETE", "/v1/tasks"),
        ("PATCH", "/v1/me"),
        ("TRACE", "/v1/tasks"),
        ("GET", "/v1/nope"),
    ],
)
async def test_unknown_methods_and_routes_are_problems(
    world: World, body_user: User, method: str, path: str
) -> None:
    before = await world.snapshot(body_user)
    async with world.client() as client:
        response = await client.request(method, path, headers=body_user.bearer)
    assert response.status_code in (404, 405, 501), response.text
    assert_problem(
        response,
        response.status_code,
        {404: "not_found", 405: "method_not_allowed", 501: "not_implemented"}[response.status_code],
    )
    assert await world.snapshot(body_user) == before
