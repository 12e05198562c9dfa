"""Protocol-level refusals through the ingress: unknown methods, malformed request lines and
headers, oversized parts, an upstream that is down. Each is a problem+json with API.md's
fields, whichever of nginx or the services' HTTP server refuses it; raw sockets, because
clients will not send such bytes."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from devstack import stack
from tests.hostile.support import World, assert_raw_problem, send_raw

# One route of each service behind the ingress, and the web page.
ROUTES = ["/v1/me", "/v1/tasks", "/v1/auth/sign-in", "/v1/events", "/"]


def _get(path: str, *headers: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    lines = [b"GET " + path.encode() + b" " + version, b"Host: 127.0.0.1", *headers]
    return b"\r\n".join([*lines, b"Connection: close", b"", b""])


async def _problem(
    port: int, request: bytes, status: int, code: str, headers: dict[str, str] | None = None
) -> dict[str, str]:
    got, got_headers, body = await send_raw(port, request)
    assert_raw_problem(got, got_headers, body, {status}, code)
    for name, value in (headers or {}).items():
        assert got_headers.get(name) == value, got_headers
    return got_headers


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("method", ["FOO", "PROPFIND", "M-SEARCH"])
async def test_a_method_no_route_has_is_501(world: World, method: str, path: str) -> None:
    request = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    await _problem(world.config.ingress_port, request.encode(), 501, "not_implemented")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/me", "GET"),
        ("DELETE", "/v1/tasks", "GET"),
        ("PUT", "/v1/auth/sign-in", "POST"),
        ("POST", "/v1/events", "GET"),
        ("PATCH", "/", "GET"),
    ],
)
async def test_a_method_another_route_has_is_405_with_allow(
    world: World, method: str, path: str, allow: str
) -> None:
    request = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    headers = await _problem(world.config.ingress_port, request.encode(), 405, "method_not_allowed")
    assert allow in {m.strip() for m in headers["allow"].split(",")}, headers


def _concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "0b4f1c7e-1d0a-4c55-9a1e-5f2d8c6b7a90", template)


async def test_trace_is_405_naming_the_routes_own_methods(world: World) -> None:
    """nginx refuses TRACE itself, on every path; its 405 names in Allow what the service's own
    405 names, for every route of the published document and the web page."""
    async with httpx.AsyncClient(base_url=world.url) as client:
        document = (await client.get("/v1/openapi.json")).json()
    paths = [_concrete(path) for path in document["paths"]] + ["/", "/assets/app.js"]
    assert len(paths) >= 15
    port = world.config.ingress_port
    for path in paths:
        # PATCH: no route takes it, so the service answers 405 with the route's methods.
        own = await _problem(port, _request("PATCH", path), 405, "method_not_allowed")
        nginx = await _problem(port, _request("TRACE", path), 405, "method_not_allowed")
        assert _methods(nginx["allow"]) == _methods(own["allow"]), path


async def test_trace_on_no_route_and_connect_are_problems(world: World) -> None:
    port = world.config.ingress_port
    await _problem(port, _request("TRACE", "/v1/no-such-route"), 404, "not_found")
    status, headers, body = await send_raw(port, _request("CONNECT", "127.0.0.1:443"))
    assert_raw_problem(status, headers, body, {400, 404, 405})


def _request(method: str, target: str) -> bytes:
    return f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()


def _methods(allow: str) -> set[str]:
    return {method.strip() for method in allow.split(",")}


# Header bytes nginx passes on and the services' parser refuses.
BAD_HEADER_VALUES = {
    "control-byte": b"X-Note: a\x01b",
    "escape": b"X-Note: \x1b[31m",
    "del-in-bearer": b"Authorization: Bearer abc\x7fdef",
    "control-in-cookie": b"Cookie: mf_session=abc\x02",
    "control-in-content-type": b"Content-Type: application/json\x0b",
}


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("header", list(BAD_HEADER_VALUES))
async def test_a_control_byte_in_a_header_is_400(world: World, header: str, path: str) -> None:
    request = _get(path, BAD_HEADER_VALUES[header])
    await _problem(world.config.ingress_port, request, 400, "bad_request")


MALFORMED = {
    # The request line.
    "lowercase-method": (b"get /v1/me HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    "no-slash": (b"GET v1/me HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    "non-ascii-path": (_get("/v1/tasks/").replace(b"/ ", b"/\xff ", 1), 400, "bad_request"),
    "control-in-path": (_get("/v1/m").replace(b"/m ", b"/m\x01e ", 1), 400, "bad_request"),
    "utf8-path": (_get("/v1/").replace(b"/ ", "/é ".encode(), 1), 400, "bad_request"),
    "nul-escape": (_get("/v1/me%00"), 400, "bad_request"),
    "bad-escape": (_get("/v1/%zz"), 400, "bad_request"),
    "above-root": (_get("/../../etc/passwd"), 400, "bad_request"),
    "bad-version": (_get("/v1/me", version=b"HTTP/1.x"), 400, "bad_request"),
    "http-3": (_get("/v1/me", version=b"HTTP/3.0"), 505, "http_version_not_supported"),
    "tls-hello": (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400, "bad_request"),
    "h2-preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "bad_request"),
    "uri-20KiB": (_get("/v1/tasks/" + "a" * 20_000), 414, "uri_too_long"),
    # Headers.
    "nul-in-value": (_get("/v1/me", b"X-Note: a\x00b"), 400, "bad_request"),
    "cr-in-value": (_get("/v1/me", b"X-Note: a\rb"), 400, "bad_request"),
    "space-in-name": (_get("/v1/me", b"X Note: a"), 400, "bad_request"),
    "folded": (_get("/v1/me", b"X-Note: a", b" b"), 400, "bad_request"),
    "header-16KiB": (_get("/v1/me", b"X-Note: " + b"a" * 16_384), 431, "headers_too_large"),
    "cookie-16KiB": (
        _get("/v1/me", b"Cookie: mf_session=" + b"a" * 16_384),
        431,
        "headers_too_large",
    ),
    "bearer-16KiB": (
        _get("/v1/events", b"Authorization: Bearer " + b"a" * 16_384),
        431,
        "headers_too_large",
    ),
    # Host.
    "host-with-space": (b"GET /v1/me HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "bad_request"),
    "host-dots": (b"GET /v1/me HTTP/1.1\r\nHost: ..\r\n\r\n", 400, "bad_request"),
    "two-hosts": (b"GET /v1/me HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "bad_request"),
    "no-host": (b"GET /v1/me HTTP/1.1\r\nConnection: close\r\n\r\n", 400, "bad_request"),
    # HTTP/1.0 needs no Host: the request reaches the gateway, which wants a session.
    "http-1.0-no-host": (b"GET /v1/me HTTP/1.0\r\n\r\n", 401, "session_missing"),
    # nginx drops a header line without a colon; what is left has no credentials.
    "no-colon": (_get("/v1/me", b"NoColonHere"), 401, "session_missing"),
    # Bodies.
    "body-5MB": (
        b"POST /v1/tasks HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        b"Content-Length: 5000000\r\nConnection: close\r\n\r\n{",
        413,
        "payload_too_large",
    ),
    "bad-chunk-size": (
        b"POST /v1/tasks HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    "chunk-longer-than-said": (
        b"POST /v1/auth/sign-in HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    "chunked-http-1.0": (
        b"POST /v1/tasks HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    "length-overflow": (
        b"POST /v1/tasks HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n"
        b"Connection: close\r\n\r\n",
        400,
        "bad_request",
    ),
}


@pytest.mark.parametrize("name", list(MALFORMED))
async def test_a_malformed_request_is_a_problem(world: World, name: str) -> None:
    request, status, code = MALFORMED[name]
    await _problem(world.config.ingress_port, request, status, code)


async def test_the_services_refuse_what_their_parser_cannot_read_with_a_problem(
    world: World,
) -> None:
    """Behind another ingress, or reached on their own ports, the services answer a request
    their HTTP parser refuses with a problem too, never plain text."""
    for service in ("auth", "gateway", "notifier"):
        port = world.config.ports[service]
        for request in (
            b"FOO /v1/me HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /v1/\xff HTTP/1.1\r\nHost: a\r\n\r\n",
            _get("/v1/me", b"X-Note: a\x01b"),
        ):
            await _problem(port, request, 400, "bad_request")
        # The ingress's request id, read before the bad header, is the problem's.
        request = _get("/v1/me", b"X-Request-ID: ingress-id-1", b"X-Note: a\x01b")
        status, headers, body = await send_raw(port, request)
        assert assert_raw_problem(status, headers, body, {400})["request_id"] == "ingress-id-1"


@pytest.fixture(scope="module")
def dead_ingress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The ingress of a stack whose services are all down (their ports closed), with short
    client timeouts."""
    config = stack.StackConfig(
        run_dir=tmp_path_factory.mktemp("dead-ingress"),
        ingress_port=stack.free_port(),
        ports={service: stack.free_port() for service in stack.SERVICES},
    )
    conf = stack.render_nginx(config)
    conf.write_text(
        conf.read_text().replace(
            "http {", "http {\n    client_header_timeout 1s;\n    client_body_timeout 1s;", 1
        )
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    subprocess.run([nginx, "-p", str(config.run_dir), "-c", str(conf)], check=True)
    try:
        stack.wait_until(lambda: stack.port_open(config.ingress_port), "the dead ingress")
        yield config.ingress_port
    finally:
        stack.stop_pid_file(config.run_dir / "nginx.pid")


@pytest.mark.parametrize("path", ROUTES)
async def test_a_service_that_is_down_is_503_service_unavailable(
    dead_ingress: int, path: str
) -> None:
    headers = await _problem(dead_ingress, _get(path), 503, "service_unavailable")
    assert int(headers["retry-after"]) > 0


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v1/me HTTP/1.1\r\nHost: a\r\n",
        b"POST /v1/tasks HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n{",
    ],
    ids=["headers", "body"],
)
async def test_a_request_that_never_finishes_is_closed_without_a_page(
    dead_ingress: int, request_bytes: bytes
) -> None:
    """nginx's request timeout (408) closes the connection and sends nothing, so no HTML."""
    reader, writer = await asyncio.open_connection("127.0.0.1", dead_ingress)
    try:
        writer.write(request_bytes)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    assert answer == b"", answer[:300]
