"""yt-dlp, embedded as a library for extraction only, its networking replaced by ours.

yt-dlp knows what platform pages hold (formats, title, duration); it never downloads media
here and never opens a connection of its own. The only request handler its
:class:`~yt_dlp.networking.RequestDirector` has is :class:`PolicyHandler`, which hands each
request to the task's :class:`~.fetcher.Fetcher` on the worker's event loop: the same
egress checks on every redirect hop, timeouts and size caps as a direct file. No plugin
directories are loaded, no cookies are read from browsers, nothing is cached on disk.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import structlog
import yt_dlp
import yt_dlp.globals
from yt_dlp.extractor.common import InfoExtractor
from yt_dlp.networking.common import Request, RequestDirector, RequestHandler, Response
from yt_dlp.networking.exceptions import HTTPError, RequestError, TransportError

from mediaflow_worker.errors import TaskFailure
from mediaflow_worker.media.fetcher import Fetcher
from mediaflow_worker.media.plan import Info, Plan

log = structlog.get_logger(__name__)

# Plugins would run code from directories nobody deployed: off before yt-dlp looks for them.
yt_dlp.globals.plugin_dirs.value = []

# Extractors asked before yt-dlp's own (tests register an offline one here).
EXTRA_EXTRACTORS: list[type[InfoExtractor]] = []
_HTTP_STATUS = re.compile(r"HTTP (\d{3})")

Submit = Callable[..., "Future[Any]"]


@dataclass
class _Bridge:
    """How a handler on yt-dlp's thread reaches the task's fetcher on the event loop, and
    the first refusal it met (the task's failure, whatever yt-dlp makes of it)."""

    fetcher: Fetcher
    loop: asyncio.AbstractEventLoop
    max_bytes: int
    refused: TaskFailure | None = None
    urls: list[str] = field(default_factory=list)


class PolicyHandler(RequestHandler):
    """A yt-dlp request handler that sends nothing itself: each request goes through the
    task's fetch path; redirects are followed (and checked) there."""

    RH_KEY = "MediaflowPolicy"
    RH_NAME = "mediaflow"
    _SUPPORTED_URL_SCHEMES = ("http", "https")
    _SUPPORTED_PROXY_SCHEMES = ()
    _SUPPORTED_FEATURES = ()
    bridge: _Bridge

    def _check_extensions(self, extensions: dict[str, Any]) -> None:
        super()._check_extensions(extensions)
        for name in ("cookiejar", "timeout", "legacy_ssl", "keep_header_casing"):
            extensions.pop(name, None)

    def _send(self, request: Request) -> Response:
        bridge = self.bridge
        headers = dict(self._merge_headers(request.headers))
        cookies = self._get_cookiejar(request).get_cookie_header(request.url)
        if cookies:
            headers["Cookie"] = cookies
        bridge.urls.append(request.url)
        method = request.method or ("POST" if request.data else "GET")
        data = request.data if isinstance(request.data, bytes) else None
        future = asyncio.run_coroutine_threadsafe(
            bridge.fetcher.read(
                request.url,
                bridge.max_bytes,
                headers=headers,
                method=method,
                data=data,
                what="An extractor's response",
            ),
            bridge.loop,
        )
        try:
            fetched = future.result()
        except TaskFailure as exc:
            if exc.code == "blocked_destination" and bridge.refused is None:
                bridge.refused = exc
            status = _HTTP_STATUS.search(exc.message)
            if status is not None:
                response = Response(io.BytesIO(b""), request.url, {}, int(status.group(1)))
                raise HTTPError(response) from exc
            raise TransportError(exc.message, cause=exc) from exc
        return Response(
            io.BytesIO(fetched.body),
            fetched.url,
            {"Content-Type": fetched.content_type, "Content-Length": str(len(fetched.body))},
            200,
        )


class _PolicyYoutubeDL(yt_dlp.YoutubeDL):
    """A YoutubeDL whose only request handler is :class:`PolicyHandler`."""

    bridge: _Bridge

    def build_request_director(self, handlers: Any, preferences: Any = None) -> RequestDirector:
        director = super().build_request_director([PolicyHandler], preferences)
        for handler in director.handlers.values():
            handler.bridge = self.bridge
        return director


def _params(timeout: float) -> dict[str, Any]:
    return {
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "skip_download": True,
        "simulate": True,
        "noplaylist": True,
        "playlist_items": "1",
        "cachedir": False,
        "check_formats": False,
        "socket_timeout": timeout,
        "logger": _Logger(),
        "color": "no_color",
        "extractor_retries": 0,
        "ignore_no_formats_error": False,
    }


class _Logger:
    def debug(self, message: str) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        log.info("extractor.warning", message=message[:500])

    def error(self, message: str) -> None:
        log.info("extractor.error", message=message[:500])


def _youtube_dl(bridge: _Bridge, timeout: float) -> _PolicyYoutubeDL:
    ydl = _PolicyYoutubeDL(_params(timeout), auto_init=False)
    ydl.bridge = bridge
    for extra in EXTRA_EXTRACTORS:
        ydl.add_info_extractor(extra())
    ydl.add_default_info_extractors()
    return ydl


def parser(fetcher: Fetcher) -> InfoExtractor:
    """An extractor object for yt-dlp's manifest parsers, which need no network."""
    bridge = _Bridge(fetcher, asyncio.get_running_loop(), 0)
    ydl = _PolicyYoutubeDL(_params(1.0), auto_init=False)
    ydl.bridge = bridge
    ie: InfoExtractor = ydl.get_info_extractor("Generic")
    return ie


def specific_extractor(url: str) -> str | None:
    """The key of an extractor (other than the generic one) that knows ``url``: a
    platform page, told by its address alone."""
    for extra in EXTRA_EXTRACTORS:
        if extra.suitable(url):
            return str(extra.ie_key())
    for ie in yt_dlp.extractor.gen_extractor_classes():
        key = ie.ie_key()
        if key != "Generic" and ie.suitable(url) and ie.working():
            return str(key)
    return None


async def extract(
    fetcher: Fetcher, url: str, ie_key: str, *, max_bytes: int, socket_timeout: float
) -> Plan:
    """Ask the extractor ``ie_key`` what ``url`` holds; its formats become the plan."""
    bridge = _Bridge(fetcher, asyncio.get_running_loop(), max_bytes)

    def run() -> dict[str, Any]:
        with _youtube_dl(bridge, socket_timeout) as ydl:
            info: dict[str, Any] = ydl.extract_info(url, download=False, ie_key=ie_key)
            return ydl.sanitize_info(info)  # type: ignore[no-any-return]

    try:
        info = await asyncio.to_thread(run)
    except yt_dlp.utils.DownloadError as exc:
        if bridge.refused is not None:
            raise bridge.refused from exc
        message = str(exc).removeprefix("ERROR: ")[:300]
        cause = exc.exc_info[1] if exc.exc_info else None
        if isinstance(cause, RequestError | yt_dlp.utils.ExtractorError) and "HTTP" in message:
            raise TaskFailure("source_http_error", f"The platform refused: {message}") from exc
        raise TaskFailure(
            "not_media", f"The page's media could not be extracted: {message}"
        ) from exc
    if bridge.refused is not None:
        raise bridge.refused
    entries = info.get("entries")
    if entries:
        info = next(iter(entries))
    formats = list(info.get("formats") or ([info] if info.get("url") else []))
    if not formats:
        raise TaskFailure("not_media", "The page names no media.")
    return Plan(
        kind="formats",
        url=url,
        source_kind=str(info.get("extractor_key") or ie_key).lower(),
        formats=formats,
        info=Info(
            title=info.get("title") or None,
            duration=_number(info.get("duration")),
            width=_integer(info.get("width")),
            height=_integer(info.get("height")),
            video_codec=None,
            audio_codec=None,
        ),
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _integer(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None
