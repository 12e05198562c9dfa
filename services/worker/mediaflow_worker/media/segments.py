"""The pieces of a stream (segments, init sections, byte ranges), fetched with bounded
parallelism and handed on strictly in order, AES-128 decrypted where keyed.

A piece that still fails after its retries fails the stream: nothing is ever skipped.
Memory is bounded by ``parallelism`` pieces, each at most ``max_piece_bytes``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mediaflow_worker.errors import Retry, TaskFailure
from mediaflow_worker.media.fetcher import Fetched, Fetcher
from mediaflow_worker.media.metrics import SEGMENTS
from mediaflow_worker.metrics import BYTES_REFETCHED
from mediaflow_worker.resume import range_first

T = TypeVar("T")
_RETRY_PAUSE = 0.25  # doubled after each failed try of one piece


@dataclass(frozen=True)
class Key:
    url: str
    iv: bytes | None  # None: the segment's media sequence number (set per piece)


@dataclass(frozen=True)
class Piece:
    url: str
    byte_range: tuple[int, int] | None = None  # (offset, length)
    key: Key | None = None
    init: bool = False


@dataclass(frozen=True)
class PieceFetch:
    """How the pieces of one task are fetched."""

    fetcher: Fetcher
    headers: Mapping[str, str]
    parallelism: int
    retries: int
    max_piece_bytes: int
    kind: str  # the source kind, for the metrics


OnPiece = Callable[[], Awaitable[None]]


class _Keys:
    """AES keys by URL, each fetched once per task."""

    def __init__(self, fetch: PieceFetch) -> None:
        self._fetch = fetch
        self._keys: dict[str, asyncio.Task[bytes]] = {}

    async def get(self, url: str) -> bytes:
        if url not in self._keys:
            self._keys[url] = asyncio.create_task(self._load(url))
        return await asyncio.shield(self._keys[url])

    async def _load(self, url: str) -> bytes:
        fetched = await _with_retries(
            self._fetch,
            lambda: self._fetch.fetcher.read(
                url, 64, headers=self._fetch.headers, what="An AES-128 key"
            ),
        )
        if len(fetched.body) != 16:
            raise TaskFailure("not_media", "An AES-128 key of the playlist is not 16 bytes.")
        return fetched.body

    def close(self) -> None:
        for task in self._keys.values():
            task.cancel()


async def _with_retries(fetch: PieceFetch, attempt: Callable[[], Awaitable[T]]) -> T:
    pause = _RETRY_PAUSE
    for tries_left in range(fetch.retries, -1, -1):
        try:
            return await attempt()
        except Retry:
            if not tries_left:
                raise
        await asyncio.sleep(pause)
        pause *= 2
    raise AssertionError("unreachable")


async def _piece(fetch: PieceFetch, keys: _Keys, piece: Piece, skip: int = 0) -> bytes:
    """The piece's bytes (decrypted), without its first ``skip`` (stored by another
    attempt): asked for with ``Range`` when the piece is not encrypted (CBC decrypts from
    its first block), else fetched whole and the prefix dropped."""
    ranged = skip if piece.key is None else 0
    byte_range = piece.byte_range
    if byte_range is not None and ranged:
        byte_range = (byte_range[0] + ranged, byte_range[1] - ranged)
    headers = dict(fetch.headers)
    if byte_range is not None:
        offset, length = byte_range
        headers["Range"] = f"bytes={offset}-{offset + length - 1}"
    elif ranged:
        headers["Range"] = f"bytes={ranged}-"
    try:
        fetched = await _with_retries(
            fetch,
            lambda: fetch.fetcher.read(
                piece.url, fetch.max_piece_bytes, headers=headers, what="A segment"
            ),
        )
        body = fetched.body
        if byte_range is not None:
            offset, length = byte_range
            if len(body) != length:
                # A server that ignores Range sends the whole resource.
                if len(body) < offset + length:
                    raise Retry("source_unreachable", "A segment's byte range came back short.")
                body = body[offset : offset + length]
        elif ranged:
            body = _rest(fetched, ranged)
        if piece.key is not None:
            body = _decrypt(body, await keys.get(piece.key.url), piece.key.iv or bytes(16))
            if skip:
                BYTES_REFETCHED.inc(min(skip, len(body)))
                body = body[skip:]
    except asyncio.CancelledError:
        raise  # another piece failed, or the task stopped: not this piece's failure
    except BaseException:
        SEGMENTS.labels(fetch.kind, "failed").inc()
        raise
    SEGMENTS.labels(fetch.kind, "fetched").inc()
    return body


def _rest(fetched: Fetched, skip: int) -> bytes:
    """A segment's bytes from ``skip`` on, out of the answer to ``Range: bytes=skip-``: a
    ``206`` must start there; a ``200`` is the whole segment again."""
    if fetched.status == 206:
        if range_first(fetched.headers.get("Content-Range")) != skip:
            raise Retry("source_unreachable", "A segment's range came back with other bytes.")
        return fetched.body
    BYTES_REFETCHED.inc(min(skip, len(fetched.body)))
    if len(fetched.body) < skip:
        raise Retry("source_unreachable", "A segment is shorter than the part stored of it.")
    return fetched.body[skip:]


def _decrypt(body: bytes, key: bytes, iv: bytes) -> bytes:
    if len(body) % 16:
        raise TaskFailure("not_media", "An encrypted segment is not whole AES blocks.")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    plain = decryptor.update(body) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(plain) + unpadder.finalize()
    except ValueError as exc:
        raise TaskFailure("not_media", "A segment does not decrypt with its key.") from exc


async def fetch_pieces(
    fetch: PieceFetch, pieces: list[Piece], on_piece: OnPiece | None = None, skip: int = 0
) -> AsyncIterator[bytes]:
    """The pieces' bytes in order, the first's without its first ``skip``; up to
    ``parallelism`` fetched at once."""
    keys = _Keys(fetch)
    window: deque[asyncio.Task[bytes]] = deque()
    upcoming = iter(pieces)
    try:
        while True:
            while len(window) < fetch.parallelism:
                piece = next(upcoming, None)
                if piece is None:
                    break
                window.append(asyncio.create_task(_piece(fetch, keys, piece, skip)))
                skip = 0
            if not window:
                return
            body = await window.popleft()
            if on_piece is not None:
                await on_piece()
            yield body
    finally:
        for task in window:
            task.cancel()
        keys.close()
        if window:
            await asyncio.gather(*window, return_exceptions=True)
