"""A direct file's body that survives the source breaking off: continued with a range
request from the first byte not yet passed on, or read again from its first byte.

Every byte yielded has been handed to the upload pipeline, which hashes as bytes pass, so
continuing at ``N`` = bytes yielded keeps the SHA-256 exact without reading anything back.
A continuation asks ``Range: bytes=N-`` with ``If-Range`` (the first answer's strong ETag,
else its Last-Modified), through :func:`~mediaflow_worker.fetch.open_source` like every
request (each redirect checked). A ``206`` must say it starts at ``N`` and has the first
answer's total; a ``200`` means the entity changed (or ranges are not honoured): the body
starts over, announced by a :class:`Restarted` marker so the store discards what it has and
never mixes two versions. A source without a validator is read again from its first byte
rather than continued blind. At most ``max_resumes`` continuations or restarts per attempt.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack

import aiohttp
import structlog

from mediaflow_worker.errors import Retry
from mediaflow_worker.fetch import FetchLimits, Source, open_source
from mediaflow_worker.metrics import BYTES_REFETCHED, RESUMES

log = structlog.get_logger(__name__)

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


class Restarted(bytes):
    """An empty chunk that says: what follows is the source again from its first byte, of
    ``size`` bytes (None when unknown); everything passed on so far is to be discarded."""

    size: int | None


def restarted(size: int | None) -> Restarted:
    marker = Restarted()
    marker.size = size
    return marker


def validator(source: Source) -> str | None:
    """The ``If-Range`` value for ``source``: its strong ETag, else its Last-Modified (a
    weak ETag cannot guard a range, RFC 9110 §13.1.5)."""
    etag = source.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return source.headers.get("Last-Modified") or None


def range_first(content_range: str | None) -> int | None:
    """Where a ``206``'s ``Content-Range`` starts, whatever the total it names."""
    match = _CONTENT_RANGE.match(content_range or "")
    return None if match is None else int(match.group(1))


def range_start(content_range: str | None, total: int) -> int | None:
    """Where a ``206``'s ``Content-Range`` starts, or None if it is not for ``total``."""
    match = _CONTENT_RANGE.match(content_range or "")
    if match is None or match.group(3) == "*" or int(match.group(3)) != total:
        return None
    return int(match.group(1))


class ResumableBody:
    """The body of ``first`` (the answer for ``url``, of which ``offset`` bytes were read
    already), continued or restarted when it breaks off. With ``restartable`` False (the
    bytes go to ffmpeg, which cannot be told to forget) a changed entity fails the attempt
    instead of restarting within it."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        limits: FetchLimits,
        url: str,
        first: Source,
        offset: int,
        max_resumes: int,
        restartable: bool = False,
        skip_to: int | None = None,
    ) -> None:
        self.session = session
        self.limits = limits
        self.url = url
        self.first = first
        self.passed = offset  # bytes of the current version handed on
        self.max_resumes = max_resumes
        self.restartable = restartable
        self.resumes = 0
        self.size = first.size
        self._validator = validator(first)
        # Where another attempt's stored parts end: the body starts there, by a range request.
        self.skip_to = skip_to

    @property
    def continued(self) -> bool:
        """Whether the body starts where another attempt's stored parts end."""
        return self.skip_to is not None

    @property
    def validator(self) -> str | None:
        """The ``If-Range`` value of the version being read."""
        return self._validator

    async def chunks(self) -> AsyncIterator[bytes]:
        current: AsyncIterator[bytes] | None = self.first.chunks
        kind = "in_attempt"
        if self.skip_to is not None:
            self.first.close()
            self.passed, current, kind = self.skip_to, None, "across_attempts"
            if self.skip_to >= (self.size or 0):
                return  # every byte is stored already (a range past the end would be a 416)
        async with AsyncExitStack() as responses:
            while True:
                if current is None:
                    source = await responses.enter_async_context(self._reopen())
                    if source.status == 206:
                        start = range_start(source.headers.get("Content-Range"), self.size or 0)
                        if start != self.passed:
                            raise Retry(
                                "source_unreachable",
                                "The source answered a range request with other bytes.",
                            )
                        RESUMES.labels(kind).inc()
                    elif not self.restartable:
                        raise Retry("source_unreachable", "The source changed while it was read.")
                    else:
                        RESUMES.labels("restart").inc()
                        BYTES_REFETCHED.inc(self.passed if kind == "in_attempt" else 0)
                        self.passed, self.size = 0, source.size
                        self._validator = validator(source)
                        yield restarted(source.size)
                    current = source.chunks
                try:
                    async for chunk in current:
                        self.passed += len(chunk)
                        yield chunk
                    return
                except Retry as broke:
                    if not self._may_resume(broke):
                        raise
                    log.info(
                        "fetch.resuming",
                        at=self.passed,
                        size=self.size,
                        resume=self.resumes + 1,
                        error=broke.message,
                    )
                # The broken answer is closed before its continuation is asked for.
                await responses.aclose()
                self.resumes += 1
                current, kind = None, "in_attempt"

    def _may_resume(self, broke: Retry) -> bool:
        # A body that broke off mid-way; a source of unknown length cannot be checked whole.
        return (
            broke.code == "source_unreachable"
            and self.size is not None
            and self.resumes < self.max_resumes
            and (self._validator is not None or self.restartable)
        )

    def _reopen(self) -> AbstractAsyncContextManager[Source]:
        headers: dict[str, str] = {}
        if self._validator is not None:
            headers = {"Range": f"bytes={self.passed}-", "If-Range": self._validator}
        return open_source(self.session, self.url, self.limits, headers=headers)
