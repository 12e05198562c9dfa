"""Open a user's media URL safely and read it in chunks.

Only http and https; every hop of a redirect is checked again; names resolve through
:class:`~mediaflow_worker.egress.GuardedResolver` and IP literals are checked here, so
no connection reaches a refused address. Failures become :class:`TaskFailure` codes, and
those another attempt may fix (connection errors, timeouts, 408, 429 and 5xx answers)
become :class:`Retry`, with the source's ``Retry-After``.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from mediaflow_libs.egress import host_name, is_well_formed_host_name
from mediaflow_worker.backoff import parse_retry_after
from mediaflow_worker.egress import (
    EgressPolicy,
    GuardedResolver,
    blocked,
    check_address,
    ip_literal,
)
from mediaflow_worker.errors import Retry, TaskFailure

CHUNK_BYTES = 256 * 1024
USER_AGENT = "mediaflow-worker/0.1"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Answers that say "not now" rather than "no": worth another attempt later.
_TRANSIENT_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600)) - {501, 505}
# Legacy IPv4 spellings (2130706433, 0x7f.1, 017700000001, 127.1) that resolvers turn into
# addresses; refused outright rather than trusting every layer to read them alike.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$", re.IGNORECASE)


@dataclass(frozen=True)
class FetchLimits:
    egress: EgressPolicy
    max_bytes: int
    max_redirects: int
    connect_timeout: float
    read_timeout: float
    total_timeout: float
    # A source slower than this on average over a window fails: a trickle that keeps the
    # read timeout at bay would otherwise hold a worker for the whole total timeout.
    min_rate: float = 0.0  # bytes per second; 0 turns the check off
    min_rate_window: float = 30.0


@dataclass(frozen=True)
class Source:
    url: URL  # where the body came from, after redirects
    content_type: str  # as the server declares it: lower case, without parameters
    size: int | None  # from Content-Length, when the body is not re-encoded in transit
    chunks: AsyncIterator[bytes]
    status: int = 200
    # What a resumed request needs of the answer: Accept-Ranges, ETag, Last-Modified,
    # Content-Range (see mediaflow_worker.resume).
    headers: Mapping[str, str] = field(default_factory=dict)
    close: Callable[[], None] = field(default=lambda: None)  # drops the connection early


@asynccontextmanager
async def open_http(egress: EgressPolicy) -> AsyncIterator[aiohttp.ClientSession]:
    """The worker's one HTTP client; its connector can only reach allowed addresses."""
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(egress), limit=100)
    async with aiohttp.ClientSession(
        connector=connector,
        headers={"User-Agent": USER_AGENT},
        read_bufsize=CHUNK_BYTES,
        trust_env=False,  # a proxy would connect on our behalf, past the address checks
    ) as session:
        yield session


def parse_url(text: str, base: URL | None = None) -> URL:
    """``text`` as a URL (joined with ``base``, the page or hop it came from), or a source
    error: a Location or link that does not parse is the source's fault, not ours."""
    try:
        url = URL(text)
        return url if base is None else base.join(url)
    # UnicodeError is a ValueError; yarl raises IndexError on some malformed authorities.
    except (TypeError, ValueError, IndexError) as exc:
        raise TaskFailure(
            "source_http_error", "The source leads to a URL that cannot be fetched."
        ) from exc


def check_url(url: URL, egress: EgressPolicy) -> None:
    """Refuse schemes other than http(s), numeric host spellings, host names no resolver
    would take as they are, and refused IP literals (on the port they would be reached on)."""
    try:
        scheme, host, port = url.scheme, url.host, url.port
    except (TypeError, ValueError, IndexError) as exc:
        raise TaskFailure(
            "source_http_error", "The source leads to a URL that cannot be fetched."
        ) from exc
    if scheme not in ("http", "https") or not host or port is None:
        raise TaskFailure("blocked_destination", "Only http and https URLs can be fetched.")
    if ip_literal(host) is not None:
        check_address(host.strip("[]"), port, egress)
    elif _NUMERIC_HOST.match(host):
        raise blocked(host)
    else:
        try:
            name = host_name(host)
        except ValueError as exc:
            raise blocked(host) from exc
        # What the gateway refuses at submit, refused here too for hosts a source names.
        if not is_well_formed_host_name(name):
            raise blocked(host)


@asynccontextmanager
async def open_source(
    session: aiohttp.ClientSession,
    url: str,
    limits: FetchLimits,
    *,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    data: bytes | None = None,
) -> AsyncIterator[Source]:
    """Follow redirects to the media and hand back its size and a chunk iterator; the
    response is closed when the block ends. ``headers``, ``method`` and ``data`` are for
    the requests of manifests' byte ranges and of extractors (a 303 turns them into GET)."""
    deadline = time.monotonic() + limits.total_timeout
    target = parse_url(url)
    for _hop in range(limits.max_redirects + 1):
        check_url(target, limits.egress)
        response = await _request(session, target, limits, deadline, headers, method, data)
        location = response.headers.get("Location")
        if response.status not in _REDIRECTS or not location:
            break
        response.release()
        if response.status == 303 or (response.status in (301, 302) and method == "POST"):
            method, data = "GET", None
        target = parse_url(location, target)
    else:
        raise TaskFailure(
            "source_http_error", f"The source redirected more than {limits.max_redirects} times."
        )
    try:
        if not 200 <= response.status < 300:
            status = f"{response.status} {response.reason or ''}".strip()
            message = f"The source answered HTTP {status}."
            if response.status in _TRANSIENT_STATUSES:
                delay = parse_retry_after(response.headers.get("Retry-After"))
                raise Retry("source_http_error", message, delay)
            raise TaskFailure("source_http_error", message)
        # With a content encoding, Content-Length counts encoded bytes, not the media's.
        encoded = response.headers.get("Content-Encoding", "identity").lower() != "identity"
        size = None if encoded else response.content_length
        if size is not None and size > limits.max_bytes:
            raise TaskFailure(
                "too_large", f"The media is {size} bytes; the limit is {limits.max_bytes}."
            )
        yield Source(
            url=target,
            content_type=response.content_type.lower(),
            size=size,
            chunks=_chunks(response, limits),
            status=response.status,
            headers={
                name: value
                for name in ("Accept-Ranges", "ETag", "Last-Modified", "Content-Range")
                if (value := response.headers.get(name)) is not None
            },
            close=response.close,
        )
    finally:
        # Closing (not releasing) drops the connection instead of draining an unread body.
        response.close()


async def _request(
    session: aiohttp.ClientSession,
    url: URL,
    limits: FetchLimits,
    deadline: float,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    data: bytes | None = None,
) -> aiohttp.ClientResponse:
    timeout = aiohttp.ClientTimeout(
        # aiohttp's total covers reading the body too; it is what is left of the job's budget.
        total=max(deadline - time.monotonic(), 0.001),
        sock_connect=limits.connect_timeout,
        sock_read=limits.read_timeout,
    )
    with _mapped_errors():
        return await session.request(
            method,
            url,
            data=data,
            allow_redirects=False,
            timeout=timeout,
            # Media is already compressed; asking for identity keeps Content-Length meaningful.
            headers={**(headers or {}), "Accept-Encoding": "identity"},
        )


async def _chunks(response: aiohttp.ClientResponse, limits: FetchLimits) -> AsyncIterator[bytes]:
    window_start, window_bytes = time.monotonic(), 0
    with _mapped_errors():
        async for chunk in response.content.iter_chunked(CHUNK_BYTES):
            window_bytes += len(chunk)
            elapsed = time.monotonic() - window_start
            if limits.min_rate and elapsed >= limits.min_rate_window:
                if window_bytes < limits.min_rate * elapsed:
                    raise Retry(
                        "source_timeout",
                        f"The source sent less than {limits.min_rate:.0f} bytes per second.",
                    )
                window_start, window_bytes = time.monotonic(), 0
            yield chunk


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """Translate client errors into the API's error codes; network trouble is transient."""
    try:
        yield
    except TaskFailure:
        raise
    except TimeoutError as exc:  # aiohttp's connect and read timeouts subclass it too
        raise Retry("source_timeout", "The source took too long to answer.") from exc
    except aiohttp.InvalidURL as exc:
        raise TaskFailure("blocked_destination", "The source URL cannot be fetched.") from exc
    except aiohttp.ClientPayloadError as exc:
        raise Retry("source_unreachable", "The source broke off the download.") from exc
    except aiohttp.ClientResponseError as exc:
        # What the client's parser refuses (a malformed status line or header): the answer is
        # not HTTP, and another attempt would get the same.
        raise TaskFailure("source_http_error", "The source's answer is not valid HTTP.") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise Retry("source_unreachable", "The source could not be reached.") from exc
    except (ValueError, LookupError) as exc:
        # A URL or header the client cannot encode or take apart (odd bytes, odd encodings):
        # the source's doing, and never an internal error.
        raise TaskFailure("source_http_error", "The source cannot be fetched as it is.") from exc
