"""The web page at ``/``: plain HTML, CSS and JavaScript files (no build step), served
under a strict Content-Security-Policy."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from litestar import Request, Response, get
from litestar.params import FromPath

from mediaflow_libs.problems import ProblemError

# Only this origin's own files and API; no inline script or style, no frames, no plugins.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # Not `no-referrer`: with it, browsers send `Origin: null` on same-origin POSTs, which
    # the CSRF check (rightly) refuses.
    "Referrer-Policy": "same-origin",
    # Revalidated on every load (cheap with the ETag), so a deploy is seen at once.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class _File:
    body: bytes
    media_type: str
    etag: str


def _load(name: str, media_type: str) -> _File:
    body = (resources.files("mediaflow_gateway") / "web" / name).read_bytes()
    return _File(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


# Litestar appends `; charset=utf-8` to text/* types itself.
_PAGE = _load("index.html", "text/html")
_ASSETS = {
    "app.js": _load("app.js", "text/javascript"),
    "app.css": _load("app.css", "text/css"),
    "icon.svg": _load("icon.svg", "image/svg+xml"),
}


def _send(request: Request[Any, Any, Any], file: _File) -> Response[bytes]:
    headers = {**_SECURITY_HEADERS, "ETag": file.etag}
    if file.etag in {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}:
        return Response(b"", status_code=304, headers=headers)
    return Response(file.body, media_type=file.media_type, headers=headers)


@get("/", include_in_schema=False)
async def page(request: Request[Any, Any, Any]) -> Response[bytes]:
    return _send(request, _PAGE)


@get("/assets/{name:str}", include_in_schema=False)
async def asset(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
    file = _ASSETS.get(name)
    if file is None:
        raise ProblemError(404, "not_found", "No such file.")
    return _send(request, file)


route_handlers = [page, asset]
