"""One segmented stream stored as it is, without ffmpeg: an fMP4 stream's init section
followed by its media segments (decrypted) is a fragmented MP4 as it stands, the kind of
file ffmpeg would have made of it. MPEG-TS segments are not: they are remuxed (README).

Because the stored bytes are the segments' own, where each byte of the object comes from
is known (segment index, offset inside it); each stored part records where the next byte
comes from (:class:`~mediaflow_worker.journal.Journal`), and another attempt starts at that
segment, at that offset. The recorded validator is a fingerprint of the list of pieces: a
playlist that changed meanwhile is stored again from its first byte, never mixed.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections.abc import AsyncIterator

from mediaflow_worker.media.segments import OnPiece, Piece, PieceFetch, fetch_pieces
from mediaflow_worker.metrics import RESUMES

Position = tuple[int, int]  # (index of a piece, offset inside its bytes)


def concatenable(pieces: list[Piece]) -> bool:
    """Whether the pieces are one fMP4 stream: one init section, first, then media
    segments (a playlist that changes its ``EXT-X-MAP`` midway needs a remux)."""
    return bool(pieces) and pieces[0].init and not any(p.init for p in pieces[1:])


def fingerprint(pieces: list[Piece]) -> str:
    """What identifies the stream's bytes: every piece's URL, byte range and key."""
    listed = [
        [
            p.url,
            list(p.byte_range) if p.byte_range else None,
            p.key.url if p.key else None,
            p.key.iv.hex() if p.key and p.key.iv else None,
            p.init,
        ]
        for p in pieces
    ]
    return "segments:" + hashlib.sha256(json.dumps(listed).encode()).hexdigest()


class SegmentedBody:
    """The stream's bytes, in order, from ``start`` (where another attempt's stored parts
    end, ``stored`` bytes into the object) or from the first byte."""

    size: int | None = None  # known only once every segment is fetched

    def __init__(
        self,
        fetch: PieceFetch,
        pieces: list[Piece],
        url: str,
        on_piece: OnPiece | None = None,
        start: Position | None = None,
        stored: int = 0,
    ) -> None:
        self.fetch = fetch
        self.pieces = pieces
        self.url = url  # the playlist's (or manifest's)
        self.on_piece = on_piece
        self.start = start
        self.validator = fingerprint(pieces)
        # Each non-empty chunk handed on: where it starts in the object, and in its piece.
        self._offsets: list[int] = []
        self._positions: list[Position] = []
        self._lengths: list[int] = []
        self._stored = stored

    @property
    def continued(self) -> bool:
        """Whether the bytes start where another attempt's stored parts end."""
        return self.start is not None

    async def chunks(self) -> AsyncIterator[bytes]:
        index, inside = self.start or (0, 0)
        if self.start is not None:
            RESUMES.labels("across_attempts").inc()
        at = self._stored
        remaining = self.pieces[index:]
        async for body in fetch_pieces(self.fetch, remaining, self.on_piece, skip=inside):
            if body:
                self._offsets.append(at)
                self._positions.append((index, inside))
                self._lengths.append(len(body))
                at += len(body)
            yield body
            index, inside = index + 1, 0

    def locate(self, offset: int) -> Position:
        """Where the object's byte ``offset`` comes from; at the end of what was handed
        on, the start of the next piece."""
        at = bisect_right(self._offsets, offset) - 1
        if at < 0:
            return self.start or (0, 0)
        index, inside = self._positions[at]
        into = offset - self._offsets[at]
        if into < self._lengths[at]:
            return index, inside + into
        return index + 1, 0
