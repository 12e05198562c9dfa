"""Every request a task makes for its media, through the one egress-checked fetch path.

Manifests, keys, segments and the extractor's own requests all go through
:func:`mediaflow_worker.fetch.open_source` (every redirect hop checked, the pinned
resolver, the same timeouts and size caps) on the worker's one HTTP session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp

from mediaflow_worker.errors import TaskFailure
from mediaflow_worker.fetch import FetchLimits, Source, open_source

# Request headers a format may carry that are ours to set, not the extractor's.
_OWN_HEADERS = frozenset({"accept-encoding", "host", "content-length", "connection"})


@dataclass(frozen=True)
class Fetched:
    url: str  # after redirects
    content_type: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    status: int = 200


@dataclass
class Fetcher:
    """One task's requests: the worker's session and the task's fetch limits."""

    session: aiohttp.ClientSession
    limits: FetchLimits
    requests: int = 0

    @asynccontextmanager
    async def open(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        method: str = "GET",
        data: bytes | None = None,
    ) -> AsyncIterator[Source]:
        self.requests += 1
        async with open_source(
            self.session,
            url,
            self.limits,
            headers=clean_headers(headers),
            method=method,
            data=data,
        ) as source:
            yield source

    async def read(
        self,
        url: str,
        max_bytes: int,
        *,
        headers: Mapping[str, str] | None = None,
        method: str = "GET",
        data: bytes | None = None,
        what: str = "The source",
    ) -> Fetched:
        """The whole body of ``url``; more than ``max_bytes`` fails ``too_large``."""
        async with self.open(url, headers=headers, method=method, data=data) as source:
            if source.size is not None and source.size > max_bytes:
                raise TaskFailure("too_large", f"{what} is larger than {max_bytes} bytes.")
            # Joined once at the end: a growing buffer would be copied as it grows and once
            # more into the bytes handed on (a segment is many MiB).
            pieces: list[bytes] = []
            size = 0
            async for chunk in source.chunks:
                pieces.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    raise TaskFailure("too_large", f"{what} is larger than {max_bytes} bytes.")
            return Fetched(
                str(source.url),
                source.content_type,
                b"".join(pieces),
                source.headers,
                source.status,
            )


def clean_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Request headers without those the HTTP client and the fetch path set themselves."""
    if not headers:
        return {}
    return {k: v for k, v in headers.items() if k.lower() not in _OWN_HEADERS}
