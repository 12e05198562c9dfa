"""The load generator of ``bench/sse_bench.py``, run as its own process so that its memory
and CPU are not the server's.

It reads one JSON object from its first input line: ``{"port": int, "clients": [[path,
cookie], ...], "connect_concurrency": int}``, opens one HTTP/1.1 event stream per client on
127.0.0.1 with raw asyncio protocols (the least memory and CPU per stream), and answers
commands, one per input line, with one JSON line each:

- ``connect``: open every stream; ``{"connected", "failed", "seconds"}`` once each has
  answered 200 and sent its first bytes.
- ``collect SECONDS``: count ``data:`` lines for that long and report the delivery lag
  of each (now minus the time the event carries: ``sent``, or the task's ``updated_at``);
  ``{"received", "lag_ms": {"p50", "p99", "max"}}``.
- ``close``: hang up every stream and exit.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from datetime import datetime
from typing import Any, cast

import uvloop

CONNECT_TIMEOUT_SECONDS = 30.0


class Stream(asyncio.Protocol):
    """One event stream. Chunked framing is not undone: every frame the servers send is a
    whole SSE event, so ``data:`` lines are found by splitting on newlines."""

    def __init__(self, request: bytes, lags: list[float] | None) -> None:
        self.request = request
        self.lags = lags  # shared list; None while not collecting
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is a transport, though not an ``asyncio.Transport`` subclass.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self._buffer += data
        if not self.ready.done():
            head, found, _ = self._buffer.partition(b"\r\n\r\n")
            if not found:
                return
            self.ready.set_result(head.startswith(b"HTTP/1.1 200"))
        *lines, self._buffer = self._buffer.split(b"\n")
        if self.lags is None:
            return
        for line in lines:
            if line.startswith(b"data: "):
                self.lags.append(now - _sent_at(json.loads(line[6:])))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_result(False)


def _sent_at(event: dict[str, Any]) -> float:
    if "sent" in event:
        return float(event["sent"])
    return datetime.fromisoformat(event["updated_at"]).timestamp()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class LoadGenerator:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.port: int = spec["port"]
        self.concurrency: int = spec.get("connect_concurrency", 200)
        self.requests = [
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Accept: text/event-stream\r\nCookie: {cookie}\r\n\r\n"
            ).encode()
            for path, cookie in spec["clients"]
        ]
        self.streams: list[Stream] = []
        self.lags: list[float] = []

    async def connect(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(self.concurrency)
        started = time.monotonic()

        async def open_one(request: bytes) -> bool:
            async with gate:
                try:
                    _, stream = await loop.create_connection(
                        lambda: Stream(request, None), "127.0.0.1", self.port
                    )
                except OSError:
                    return False
                self.streams.append(stream)
                async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                    return await stream.ready

        results = await asyncio.gather(*(open_one(r) for r in self.requests))
        return {
            "connected": sum(results),
            "failed": len(results) - sum(results),
            "seconds": round(time.monotonic() - started, 2),
        }

    async def collect(self, seconds: float) -> dict[str, Any]:
        self.lags.clear()
        for stream in self.streams:
            stream.lags = self.lags
        await asyncio.sleep(seconds)
        for stream in self.streams:
            stream.lags = None
        lags_ms = [lag * 1000 for lag in self.lags]
        summary = {}
        if lags_ms:
            summary = {
                "p50": round(_percentile(lags_ms, 0.50), 2),
                "p99": round(_percentile(lags_ms, 0.99), 2),
                "max": round(max(lags_ms), 2),
            }
        return {"received": len(lags_ms), "lag_ms": summary}

    def close(self) -> None:
        for stream in self.streams:
            if stream.transport is not None:
                stream.transport.close()


async def _read_line() -> str:
    # A thread reads stdin, so that the streams keep being served meanwhile.
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def main() -> None:
    # One descriptor per stream: 10,000 streams need more than the usual soft limit.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    generator = LoadGenerator(json.loads(await _read_line()))
    while command := (await _read_line()).split():
        if command[0] == "connect":
            answer = await generator.connect()
        elif command[0] == "collect":
            answer = await generator.collect(float(command[1]))
        else:
            generator.close()
            await asyncio.sleep(0.5)  # let the closes reach the server
            return
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    uvloop.run(main())
