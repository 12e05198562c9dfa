"""The cross-site defence: an unsafe request sent by another site's page is refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import structlog
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from prometheus_client import Counter

from mediaflow_libs.problems import ProblemError

log = structlog.get_logger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CROSS_SITE_REFUSED = Counter(
    "http_cross_site_refused_total", "Unsafe requests refused as sent by another site's page"
)


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else url


def check_same_origin(connection: ASGIConnection[Any, Any, Any, Any], public_url: str) -> None:
    """Cross-site defence for every unsafe request, whatever its credentials (none, cookie or
    bearer key), sign-up and sign-in included: a browser names the page's origin in
    ``Origin`` (or, when a privacy setting strips it, ``Referer``); anything but PUBLIC_URL's
    origin is refused. A request naming neither is refused when its ``Sec-Fetch-Site`` says
    another page sent it. Clients that send none of the three (the CLI, scripts) are not
    browsers, so no page is behind them, and they pass."""
    if connection.scope.get("method", "GET") in SAFE_METHODS:
        return
    headers = connection.headers
    claimed = headers.get("origin") or headers.get("referer")
    if claimed is not None:
        if _origin_of(claimed) == _origin_of(public_url):
            return
        source = _origin_of(claimed)[:200]
    else:
        fetched_from = headers.get("sec-fetch-site", "same-origin").lower()
        if fetched_from in ("same-origin", "none"):  # "none": the user's own navigation
            return
        source = f"Sec-Fetch-Site: {fetched_from[:40]}"
    CROSS_SITE_REFUSED.inc()
    log.warning("csrf.rejected", claimed_origin=source)
    raise ProblemError(
        403, "csrf_rejected", "This request came from another site's page and was refused."
    )


def refuse_cross_site(
    public_url: str,
) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]:
    """:func:`check_same_origin` as an app-wide guard: it runs on every route before the
    handler, its dependencies or the body are touched."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        check_same_origin(connection, public_url)

    return guard
