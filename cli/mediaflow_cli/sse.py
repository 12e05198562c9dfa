"""A small Server-Sent Events reader for httpx streams (the parts of the spec mediaflow uses)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str
    id: str | None


async def read_events(response: httpx.Response) -> AsyncIterator[SseEvent | str]:
    """Yield each event, and each comment line (``: ping``) as a plain string."""
    event, event_id = "message", None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield SseEvent(event=event, data="\n".join(data), id=event_id)
            event, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            yield line
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
