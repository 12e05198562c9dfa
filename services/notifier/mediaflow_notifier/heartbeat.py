"""Heartbeats for every open event stream of the process, from one task."""

from __future__ import annotations

import asyncio
import math
from typing import Protocol


class Pingable(Protocol):
    def ping(self) -> None:
        """Send a heartbeat comment soon; must not block."""


class Heartbeat:
    """Pings every live stream of the process once per period from one task: a slice of
    the streams each second, so there is neither a timer per stream nor a burst of writes
    once a period."""

    def __init__(self, period_seconds: float) -> None:
        self._slices: list[set[Pingable]] = [set() for _ in range(math.ceil(period_seconds))]
        self._tick_seconds = period_seconds / len(self._slices)
        self._next_slice = 0  # streams join slices in turn, spreading them evenly

    def add(self, stream: Pingable) -> None:
        self._slices[self._next_slice].add(stream)
        self._next_slice = (self._next_slice + 1) % len(self._slices)

    def discard(self, stream: Pingable) -> None:
        for streams in self._slices:
            streams.discard(stream)

    async def run(self) -> None:
        """Ping until cancelled; a stream's first ping comes within one period."""
        while True:
            for streams in self._slices:
                await asyncio.sleep(self._tick_seconds)
                for stream in tuple(streams):
                    stream.ping()
